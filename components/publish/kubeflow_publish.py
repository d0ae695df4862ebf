"""Publish step 3b: the MLflow version, registered again in the Kubeflow Model Registry.

    kf = register_in_kubeflow(cfg, "kiln-llama", registered, report, tags, mlflow_run_id="…",
                              config_sha256="…", pipeline_run_name="kiln-pretrain-x7k2p")
    kf["model_version_id"], kf["created"]

Runs only when `publish.model_registry_url` is set, after the MLflow registration succeeded.
The two registries point at each other: the Kubeflow version is named after the MLflow version
number and carries the MLflow run, version and LoggedModel ids in its custom properties; the
MLflow version gets the Kubeflow ids as `kubeflow.*` tags. Pipeline-run provenance is recorded
the way OpenShift AI's own pipeline components record it: on the model artifact
(`modelSourceKind=kfp`, `modelSourceClass=pipelinerun`, group = namespace, id = run id, name = run
name; the dashboard links the version to its run from these) and, for older dashboards, as the
version's `_registeredFromPipeline{RunId,RunName,Project}` properties.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from kiln.components.common import kube
from kiln.components.common.config import Config
from kiln.components.common.errors import UserError
from kiln.components.common.registry import ModelRegistry
from kiln.components.publish.kubeflow_registry import METRICS, KubeflowRegistry

# MLflow version tags that hold the Kubeflow ids (`kiln models show` lists them).
TAG_PREFIX = "kubeflow."


def pod_namespace(sa_dir: Path | None = None) -> str:
    """The namespace (OpenShift AI project) of the pod this runs in; '' outside a cluster."""
    return kube.service_account_file("namespace", sa_dir)


def provenance(pipeline_run_id: str, run_name: str, namespace: str) -> dict[str, str]:
    """The model artifact's `model_source_*` fields for a KFP run ({} without a run id)."""
    if not pipeline_run_id:
        return {}
    source = {
        "model_source_kind": "kfp",
        "model_source_class": "pipelinerun",
        "model_source_group": namespace,
        "model_source_id": pipeline_run_id,
        "model_source_name": run_name or pipeline_run_id,
    }
    return {k: v for k, v in source.items() if v}


def version_metadata(
    report: dict[str, Any],
    tags: dict[str, str],
    mlflow: dict[str, str],
    config_sha256: str,
    run_name: str = "",
    namespace: str = "",
) -> dict[str, str | float]:
    """The Kubeflow version's custom properties: eval metrics (numbers, so the registry can
    filter on them), the lineage tags publish gives MLflow, the resolved config's sha256, the
    MLflow ids and, with a pipeline run, the dashboard's `_registeredFromPipeline*` keys."""
    metrics = report.get("metrics", report)
    props: dict[str, str | float] = {k: float(metrics[k]) for k in METRICS if k in metrics}
    props.update({k: v for k, v in tags.items() if v and k not in ("model_uri",)})
    props.update({k: v for k, v in mlflow.items() if v})
    props["config_sha256"] = config_sha256
    run_id = tags.get("pipeline_run_id", "")
    if run_id:
        props["_registeredFromPipelineRunId"] = run_id
        props["_registeredFromPipelineRunName"] = run_name or run_id
        if namespace:
            props["_registeredFromPipelineProject"] = namespace
    return props


def register_in_kubeflow(
    cfg: Config,
    name: str,
    registered: dict[str, Any],
    report: dict[str, Any],
    tags: dict[str, str],
    *,
    mlflow_run_id: str,
    config_sha256: str,
    description: str = "",
    pipeline_run_name: str = "",
    workdir: str = "kiln-work",
) -> dict[str, Any]:
    """Register MLflow version `registered` of `name` in the Kubeflow Model Registry at
    `publish.model_registry_url` (idempotent) and tag the MLflow version with its ids.

    Returns:
        {"url", "registered_model_id", "model_version_id", "model_artifact_id", "created"}

    Raises:
        Unreachable: the registry does not answer; UserError: it refuses. Either way the
            message says the model is in S3 and MLflow and that re-running publish completes it.
    """
    pc, version = cfg.publish, str(registered["version"])
    namespace = pod_namespace()
    mlflow = {
        "mlflow_run_id": mlflow_run_id,
        "mlflow_registered_model": name,
        "mlflow_model_version": version,
        "mlflow_model_id": registered.get("model_id", ""),
    }
    try:
        kf = KubeflowRegistry(pc.model_registry_url, pc.model_registry_author).register(
            name,
            version,
            tags["model_uri"],
            description=description,
            metadata=version_metadata(
                report, tags, mlflow, config_sha256, pipeline_run_name, namespace
            ),
            storage_key=pc.model_registry_storage_key,
            source=provenance(tags.get("pipeline_run_id", ""), pipeline_run_name, namespace),
        )
    except UserError as e:
        raise type(e)(
            f"publish: {name} v{version} is uploaded to {tags['model_uri']} and registered in "
            f"MLflow, but {e}; re-run publish to complete the registration"
        ) from None
    ids = {k: v for k, v in asdict(kf).items() if k != "created"}
    ModelRegistry(cfg.tracking.uri, workdir).set_version_tags(
        name, version, {f"{TAG_PREFIX}{k}": v for k, v in ids.items()}
    )
    return asdict(kf)
