"""`kiln deploy`: serve a registered model version on KServe (vLLM), only if its eval gate passed.

    reg = ModelRegistry(tracking_uri, workdir)
    plan = plan_deployment(reg, "kiln-llama", alias="champion", cfg=cfg)   # DeployRefused if gated
    print(yaml.safe_dump(plan.body, sort_keys=False))                     # dry run
    deploy(plan)                                                          # or apply it

`publish` tags every version it registers with `eval_gate` = "passed" | "failed" (the evaluate
step's verdict; in the Kubeflow Model Registry, a custom property of the version of that name,
read through `KubeflowRegistry.show`, which has the same shape as `ModelRegistry.show`). A version without `eval_gate: passed` is refused unless `force=True`: a failed
gate means the model did not meet the quality bar, and a missing tag means it was not registered
by `kiln publish`, so nothing vouches for it. The InferenceService itself comes from
`inference_service.render_inference_service`; storage credentials reach KServe's storage
initializer through the service account's data-connection Secret, never through the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kiln.components.common import kube
from kiln.components.common.config import Config
from kiln.components.common.registry import ModelRegistry
from kiln.components.publish.inference_service import (
    RUNTIME,
    apply_inference_service,
    render_inference_service,
)
from kiln.components.publish.serving import serving_name

GATE_TAG, GATE_PASSED = "eval_gate", "passed"


class DeployRefused(Exception):
    """The version's evaluation gate did not pass (or is unknown) and `force` was not given."""


@dataclass
class DeployPlan:
    """What `deploy` would apply: the resolved version and its rendered InferenceService."""

    model_name: str
    version: str
    source: str
    eval_gate: str  # "passed" | "failed" | "" (no tag)
    forced: bool  # deployed although the gate did not pass
    body: dict[str, Any]

    @property
    def where(self) -> str:
        """`inferenceservice/NAMESPACE/NAME`, for messages."""
        meta = self.body["metadata"]
        return f"inferenceservice/{meta['namespace']}/{meta['name']}"


def check_gate(info: dict[str, Any], force: bool = False) -> str:
    """Return the version's `eval_gate` tag; raise DeployRefused unless it is "passed" or `force`.

    Args:
        info: a version as `ModelRegistry.show` returns it.
        force: deploy even when the gate failed or is unknown.
    """
    gate = info["tags"].get(GATE_TAG, "")
    if gate == GATE_PASSED or force:
        return gate
    what = f"model {info['name']!r} version {info['version']}"
    if gate:
        reason = f"its evaluation gate {gate} (tag {GATE_TAG}={gate!r})"
    else:
        reason = f"it has no {GATE_TAG} tag (it was not registered by `kiln publish`)"
    registry = " --registry kubeflow" if info.get("registry") == "kubeflow" else ""
    raise DeployRefused(
        f"refusing to deploy {what}: {reason}; see `kiln models show {info['name']} "
        f"--version {info['version']}{registry}`, or pass --force to deploy it anyway"
    )


def plan_deployment(
    registry: ModelRegistry,
    name: str,
    *,
    alias: str | None = None,
    version: str | None = None,
    cfg: Config | None = None,
    namespace: str | None = None,
    service_name: str | None = None,
    runtime: str = RUNTIME,
    service_account: str = kube.MODEL_SERVER_SERVICE_ACCOUNT,
    gpus: int | None = None,
    cpu: str | None = None,
    memory: str | None = None,
    max_model_len: int | None = None,
    queue_name: str | None = None,
    force: bool = False,
) -> DeployPlan:
    """Resolve `name` at `alias` or `version`, check its eval gate, render its InferenceService.

    Resources, name and namespace default to the `publish` config section (`serving_*` fields);
    an explicit argument wins.

    Args:
        registry: where the version is registered.
        name: registered model name.
        alias: e.g. "champion"; exactly one of alias / version.
        version: version number.
        cfg: the resolved config (default: the `tiny` preset's defaults).
        namespace: target namespace ('' / None: publish.serving_namespace, else the current one).
        service_name: InferenceService name (default: publish.serving_name, else `NAME-vN`).
        runtime: ServingRuntime name.
        service_account: carries the data-connection Secret for the storage initializer.
        gpus: GPUs per replica (default publish.serving_gpus).
        cpu: CPU request/limit (default publish.serving_cpu).
        memory: memory request/limit (default publish.serving_memory).
        max_model_len: vLLM --max-model-len (default: the model's own).
        queue_name: Kueue LocalQueue label ('' = none; default publish.serving_queue).
        force: deploy even when the eval gate did not pass.

    Raises:
        ValueError: alias and version both/neither given, an unknown model/alias/version, or a
            source a cluster cannot read (a local path).
        DeployRefused: the gate did not pass and `force` is False.
    """
    if (alias is None) == (version is None):
        raise ValueError("give exactly one of --alias or --version")
    info = registry.show(name, version=version, alias=alias)
    gate = check_gate(info, force)
    if cfg is None:
        from kiln.components.common.config import load_config

        cfg = load_config(None)
    pc = cfg.publish
    body = render_inference_service(
        service_name or pc.serving_name or serving_name(name, info["version"]),
        info["source"],
        namespace=namespace or pc.serving_namespace or None,
        runtime=runtime,
        service_account=service_account,
        gpus=pc.serving_gpus if gpus is None else gpus,
        cpu=cpu or pc.serving_cpu,
        memory=memory or pc.serving_memory,
        max_model_len=max_model_len,
        queue_name=pc.serving_queue if queue_name is None else queue_name,
        model_name=name,
        model_version=info["version"],
        alias=alias,
    )
    return DeployPlan(name, info["version"], info["source"], gate, gate != GATE_PASSED, body)


def deploy(plan: DeployPlan, api_client: Any = None) -> dict[str, Any]:
    """Create or replace the plan's InferenceService; returns the object the API server stored.

    Args:
        plan: from `plan_deployment`.
        api_client: a `kubernetes.client.ApiClient` (default: in-cluster, else kubeconfig).
    """
    return apply_inference_service(plan.body, api_client)
