"""KServe InferenceService for a published Kiln model, served by vLLM.

`publish` uploads the final Hugging Face Llama directory to S3 and registers it; this module turns
that S3 URI into a `serving.kserve.io/v1beta1` InferenceService on the `kiln-vllm` ServingRuntime
(manifests/base/servingruntime-vllm.yaml). KServe's storage initializer downloads the model with the
credentials of the data-connection Secret attached to the `kiln-model-server` ServiceAccount, so
no credential ever appears in the InferenceService.

    body = render_inference_service("tiny-shakespeare", "s3://models/kiln/tiny/v3/model",
                                    model_name="tiny", model_version="3", alias="champion")
    apply_inference_service(body)          # or print(yaml.safe_dump(body)) for a dry run
"""

from __future__ import annotations

import re
from typing import Any

from kiln.components.common import kube

RUNTIME = "kiln-vllm"
MODEL_FORMAT = "vLLM"
STORAGE_SCHEMES = ("s3://", "gs://", "pvc://", "hf://", "https://")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def render_inference_service(
    name: str,
    storage_uri: str,
    *,
    namespace: str | None = None,
    runtime: str = RUNTIME,
    service_account: str = kube.MODEL_SERVER_SERVICE_ACCOUNT,
    gpus: int = 1,
    cpu: str = "4",
    memory: str = "16Gi",
    min_replicas: int = 1,
    max_replicas: int = 1,
    max_model_len: int | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
    alias: str | None = None,
    tolerations: list[dict[str, Any]] | None = None,
    queue_name: str = kube.LOCAL_QUEUE,
) -> dict[str, Any]:
    """Render an InferenceService that serves one registered model version with vLLM.

    Args:
        name: InferenceService name (DNS-1035, at most 45 characters: KServe adds suffixes).
        storage_uri: where the Hugging Face model directory lives, e.g. `s3://bucket/.../model`.
        namespace: default: the pod's service-account namespace, else the kubeconfig's.
        runtime: ServingRuntime name.
        service_account: carries the data-connection Secret for the storage initializer.
        gpus: GPUs per replica (0 serves on CPU, which vLLM supports only in CPU builds).
        cpu: CPU request and limit per replica.
        memory: memory request and limit per replica.
        min_replicas: lower bound for autoscaling (0 enables scale-to-zero in serverless mode).
        max_replicas: upper bound for autoscaling.
        max_model_len: vLLM `--max-model-len` (default: the model's `max_position_embeddings`).
        model_name: registered model name, recorded as a label for lineage.
        model_version: registered version, recorded as a label.
        alias: registry alias the version was deployed by (`champion`), recorded as a label.
        tolerations: default tolerates the `nvidia.com/gpu` taint when gpus > 0.
        queue_name: Kueue LocalQueue ('' = none), as the `kueue.x-k8s.io/queue-name` label.
            KServe copies the InferenceService's labels to the predictor's Deployment and pod
            template (RawDeployment), and Kueue's Deployment integration admits each pod
            against the queue's quota; Kueue has no InferenceService integration of its own.

    Raises:
        ValueError: a bad name, storage URI, replica range, label value or queue name.
    """
    kube.dns_label(name, "InferenceService name", max_len=45)
    if not storage_uri.startswith(STORAGE_SCHEMES) or storage_uri.rstrip("/").endswith("//"):
        raise ValueError(
            f"storage_uri {storage_uri!r}: expected a model directory URI starting with "
            f"{', '.join(STORAGE_SCHEMES)}"
        )
    if not 0 <= min_replicas <= max_replicas or max_replicas < 1:
        raise ValueError(
            f"replicas: min={min_replicas} max={max_replicas}; expected 0 <= min <= max, max >= 1"
        )
    labels = {"app.kubernetes.io/part-of": "kiln", "app.kubernetes.io/component": "serving"}
    for key, value in (
        ("model-name", model_name),
        ("model-version", model_version),
        ("alias", alias),
    ):
        if value is not None:
            if len(str(value)) > 63 or not _LABEL_VALUE.match(str(value)):
                raise ValueError(f"{key} {value!r}: not a valid Kubernetes label value")
            labels[f"kiln.dev/{key}"] = str(value)
    labels.update(kube.queue_labels(queue_name, "queue_name"))
    res: dict[str, str] = {"cpu": cpu, "memory": memory}
    if gpus:
        res["nvidia.com/gpu"] = str(gpus)
    args = [f"--tensor-parallel-size={max(gpus, 1)}"]
    if max_model_len:
        args.append(f"--max-model-len={int(max_model_len)}")
    if tolerations is None:
        tolerations = (
            [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
            if gpus
            else []
        )
    predictor: dict[str, Any] = {
        "serviceAccountName": service_account,
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "model": {
            "modelFormat": {"name": MODEL_FORMAT},
            "runtime": runtime,
            "storageUri": storage_uri,
            "args": args,
            "resources": {"requests": dict(res), "limits": dict(res)},
            "securityContext": kube.restricted_security_context(),
        },
    }
    if tolerations:
        predictor["tolerations"] = tolerations
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": namespace or kube.current_namespace(),
            "labels": labels,
            # RawDeployment: a plain Deployment + Service, no Knative/Istio needed.
            "annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"},
        },
        "spec": {"predictor": predictor},
    }


def apply_inference_service(body: dict[str, Any], api_client: Any = None) -> dict[str, Any]:
    """Create the InferenceService, or replace the existing one of that name (a new revision).

    Args:
        body: from `render_inference_service`.
        api_client: a `kubernetes.client.ApiClient`; default `kube.api_client()`.

    Returns:
        The object as the API server stored it.
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CustomObjectsApi(api_client or kube.api_client())
    where = ("serving.kserve.io", "v1beta1", body["metadata"]["namespace"], "inferenceservices")
    try:
        return api.create_namespaced_custom_object(*where, body)
    except ApiException as e:
        if e.status != 409:  # 409: it exists; anything else is the caller's problem to see
            raise
    current = api.get_namespaced_custom_object(*where, body["metadata"]["name"])
    body = {**body, "metadata": {**body["metadata"]}}
    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    return api.replace_namespaced_custom_object(*where, body["metadata"]["name"], body)
