"""Run `kiln train` on KubeRay as a RayJob: render the body, create it, follow it, clean up.

The RayJob brings up its own Ray cluster (one head, `workers` GPU pods), runs
`kiln train ... --workers N --gpu --ray-address auto` on the head through a submitter pod, and is
torn down when the job ends. Workers read shards from and write checkpoints to S3 with the
data-connection Secret's credentials, so a re-run of the step with `--resume` continues from the
latest checkpoint.

    body = render_rayjob("kiln-train-abc", ["--tokens", "s3://b/tok", "--output", "s3://b/run"],
                         resources=RayJobResources(workers=2, gpus_per_worker=4))
    status = run_rayjob(body)        # raises RayJobFailed when the job fails

The body is a plain dict (tests validate it against the KubeRay CRD schema); only `run_rayjob`
needs the `kubernetes` client, imported lazily.
"""

from __future__ import annotations

import copy
import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kiln.components.common import kube
from kiln.components.common.images import RAY_VERSION, image_ref

log = logging.getLogger(__name__)

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
TERMINAL_DEPLOYMENT = {"Complete", "Failed", "ValidationFailed"}
TERMINAL_JOB = {"SUCCEEDED", "FAILED", "STOPPED"}


class RayJobFailed(RuntimeError):
    """The RayJob ended without its Ray job succeeding (message carries KubeRay's reason)."""


@dataclass
class RayJobResources:
    """Shape of the Ray cluster a RayJob creates (pipeline parameters map onto these)."""

    workers: int = 1  # GPU worker pods
    gpus_per_worker: int = 1  # GPUs per worker pod; one Ray Train worker per GPU (0 = CPU only)
    worker_cpu: str = "8"
    worker_memory: str = "64Gi"
    head_cpu: str = "2"
    head_memory: str = "8Gi"
    shm_size: str = "8Gi"  # /dev/shm for NCCL and the data loader
    tolerations: list[dict[str, Any]] = field(default_factory=lambda: [dict(GPU_TOLERATION)])
    node_selector: dict[str, str] = field(default_factory=dict)


def _pod_template(
    container: dict[str, Any], service_account: str, shm: str, extra: dict | None = None
) -> dict[str, Any]:
    spec = {
        "serviceAccountName": service_account,
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}}],
        **(extra or {}),
    }
    container.setdefault("volumeMounts", []).append({"name": "shm", "mountPath": "/dev/shm"})
    return {"spec": spec}


def _container(name: str, image: str, secret: str, cpu: str, mem: str, gpus: int = 0) -> dict:
    res = {"cpu": cpu, "memory": mem, **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    return {
        "name": name,
        "image": image,
        "envFrom": [{"secretRef": {"name": secret}}],
        "resources": {"requests": dict(res), "limits": dict(res)},
        "securityContext": kube.restricted_security_context(),
    }


def render_rayjob(
    name: str,
    train_args: list[str],
    *,
    resources: RayJobResources | None = None,
    image: str | None = None,
    namespace: str | None = None,
    secret_name: str = kube.DATA_CONNECTION_SECRET,
    service_account: str = kube.WORKLOAD_SERVICE_ACCOUNT,
    queue_name: str | None = kube.KUEUE_QUEUE,
    ttl_seconds: int = 600,
    active_deadline_seconds: int | None = None,
) -> dict[str, Any]:
    """Render a `ray.io/v1` RayJob that runs `kiln train` on a fresh Ray cluster.

    Args:
        name: RayJob name (DNS-1035, at most 47 characters: KubeRay derives pod names from it).
        train_args: `kiln train` arguments (`--tokens`, `--output`, `--set ...`); the worker count,
            `--gpu` and `--ray-address auto` are appended from `resources`.
        resources: cluster shape; default one worker with one GPU.
        image: Ray/CUDA image; default `image_ref("gpu")` (env-overridable, digest-pinnable).
        namespace: default: the pod's service-account namespace, else the kubeconfig's.
        secret_name: data-connection Secret exposed to head and workers as environment variables.
        service_account: identity of the Ray pods (needs no API access; token not mounted).
        queue_name: Kueue LocalQueue label; None to submit without Kueue.
        ttl_seconds: keep the finished cluster this long for inspection, then delete it.
        active_deadline_seconds: fail the job after this long (None: no limit).

    Returns:
        The RayJob as a dict, ready for the Kubernetes API.
    """
    res = resources or RayJobResources()
    if res.workers < 1 or res.gpus_per_worker < 0:
        raise ValueError(
            f"RayJobResources: workers={res.workers} gpus_per_worker={res.gpus_per_worker}; "
            "expected workers >= 1 and gpus_per_worker >= 0"
        )
    kube.dns_label(name, "RayJob name", max_len=47)
    image = image or image_ref("gpu")
    train_workers = res.workers * max(res.gpus_per_worker, 1)
    argv = ["kiln", "train", *train_args, "--workers", str(train_workers), "--ray-address", "auto"]
    if res.gpus_per_worker:
        argv.append("--gpu")
    head = _container("ray-head", image, secret_name, res.head_cpu, res.head_memory)
    head["ports"] = [
        {"name": "gcs", "containerPort": 6379},
        {"name": "dashboard", "containerPort": 8265},
        {"name": "client", "containerPort": 10001},
    ]
    worker = _container(
        "ray-worker", image, secret_name, res.worker_cpu, res.worker_memory, res.gpus_per_worker
    )
    worker_extra: dict[str, Any] = {"tolerations": copy.deepcopy(res.tolerations)}
    if res.node_selector:
        worker_extra["nodeSelector"] = dict(res.node_selector)
    submitter = {
        "name": "ray-job-submitter",
        "image": image,
        "resources": {
            "requests": {"cpu": "200m", "memory": "512Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
        "securityContext": kube.restricted_security_context(),
    }
    submitter_pod = _pod_template(submitter, service_account, "64Mi", {"restartPolicy": "Never"})
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace or kube.current_namespace(),
        "labels": {"app.kubernetes.io/part-of": "kiln", "app.kubernetes.io/component": "train"},
    }
    if queue_name:
        metadata["labels"]["kueue.x-k8s.io/queue-name"] = queue_name
    spec: dict[str, Any] = {
        "entrypoint": shlex.join(argv),
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": ttl_seconds,
        "submissionMode": "K8sJobMode",
        "submitterPodTemplate": submitter_pod,
        "submitterConfig": {"backoffLimit": 0},
        "rayClusterSpec": {
            "rayVersion": RAY_VERSION,
            "authOptions": {"mode": "token"},
            "headGroupSpec": {
                "rayStartParams": {"dashboard-host": "0.0.0.0", "num-gpus": "0"},
                "template": _pod_template(head, service_account, "2Gi"),
            },
            "workerGroupSpecs": [
                {
                    "groupName": "gpu" if res.gpus_per_worker else "cpu",
                    "replicas": res.workers,
                    "minReplicas": res.workers,
                    "maxReplicas": res.workers,
                    "rayStartParams": {},
                    "template": _pod_template(worker, service_account, res.shm_size, worker_extra),
                }
            ],
        },
    }
    if active_deadline_seconds:
        spec["activeDeadlineSeconds"] = int(active_deadline_seconds)
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": metadata, "spec": spec}


def run_rayjob(
    body: dict[str, Any],
    *,
    api_client: Any = None,
    poll_s: float = 5.0,
    timeout_s: float | None = None,
    cleanup: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Create a RayJob, stream its submitter's log and status until it ends, then delete it.

    Args:
        body: from `render_rayjob`.
        api_client: a `kubernetes.client.ApiClient`; default `kube.api_client()`.
        poll_s: seconds between status/log polls.
        timeout_s: raise TimeoutError after this long (the RayJob is still deleted).
        cleanup: delete the RayJob (and so its Ray cluster) when done, failed or interrupted.
        echo: where status changes and log lines go.

    Returns:
        The final `status` of the RayJob.

    Raises:
        RayJobFailed: the Ray job did not succeed (KubeRay's reason and message included).
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api_client = api_client or kube.api_client()
    crd = client.CustomObjectsApi(api_client)
    core = client.CoreV1Api(api_client)
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    where = ("ray.io", "v1", ns, "rayjobs")
    crd.create_namespaced_custom_object(*where, body)
    echo(f"rayjob {ns}/{name}: created ({body['spec']['entrypoint']})")
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    printed, last, status = 0, None, {}
    try:
        while True:
            status = crd.get_namespaced_custom_object(*where, name).get("status") or {}
            state = (status.get("jobDeploymentStatus", ""), status.get("jobStatus", ""))
            if state != last:
                echo(f"rayjob {ns}/{name}: deployment={state[0] or '-'} job={state[1] or '-'}")
                last = state
            printed = _echo_new_log_lines(core, ns, name, printed, echo, ApiException)
            if state[0] in TERMINAL_DEPLOYMENT or state[1] in TERMINAL_JOB:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"rayjob {ns}/{name}: still {state} after {timeout_s}s")
            time.sleep(poll_s)
        if status.get("jobStatus") != "SUCCEEDED":
            raise RayJobFailed(
                f"rayjob {ns}/{name} ended with deployment={status.get('jobDeploymentStatus')} "
                f"job={status.get('jobStatus')}: {status.get('reason', '')} {status.get('message', '')}".strip()
            )
        return status
    finally:
        if cleanup:
            try:
                crd.delete_namespaced_custom_object(
                    *where, name, body=client.V1DeleteOptions(propagation_policy="Foreground")
                )
                echo(f"rayjob {ns}/{name}: deleted")
            except ApiException as e:
                if e.status != 404:
                    log.warning("could not delete rayjob %s/%s: %s", ns, name, e.reason)


def _echo_new_log_lines(
    core: Any, ns: str, name: str, printed: int, echo: Callable, exc: type
) -> int:
    """Print the submitter pod's log lines after the first `printed`; return the new count."""
    try:
        pods = core.list_namespaced_pod(ns, label_selector=f"job-name={name}").items
        if not pods:
            return printed
        newest = max(pods, key=lambda p: str(p.metadata.creation_timestamp or ""))
        text = core.read_namespaced_pod_log(newest.metadata.name, ns)
    except exc:  # pod not started yet, or already gone
        return printed
    lines = text.splitlines()
    for line in lines[printed:]:
        echo(line)
    return max(printed, len(lines))
