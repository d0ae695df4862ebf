"""Every GPU workload Kiln creates or ships waits in a Kueue LocalQueue.

Kueue admits a workload when its `kueue.x-k8s.io/queue-name` label names a LocalQueue with quota
left. This walks every object that can ask for a GPU: the training pods of the compiled pretrain,
sweep and sft pipelines, every rendered kustomization, the InferenceService `kiln deploy`
renders and, once `kiln.components.pretrain.trainjob_launch.trainjob_body` exists, the TrainJob
it builds. Each must carry the label with the configured queue (default: the LocalQueue that
manifests/base ships), a custom queue must propagate, and '' must remove the label.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from kiln.components.common import kube
from kiln.components.common.config import load_config
from kiln.components.publish.inference_service import render_inference_service
from kiln.pipelines.options import PipelineOptions
from kiln.pipelines.pretrain import compile_pipeline
from kiln.pipelines.sft import compile_sft_pipeline
from kiln.pipelines.sweep import compile_sweep_pipeline

from .conftest import MANIFESTS

QUEUE = kube.LOCAL_QUEUE
CUSTOM = "team-gpus"
PIPELINES = {
    "pretrain": (compile_pipeline, {"exec-pretrain"}),
    "sweep": (compile_sweep_pipeline, {"exec-sweep-point"}),
    "sft": (compile_sft_pipeline, {"exec-sft"}),
}
# Kinds Kueue can queue by this label: its job integrations, Deployments through its pod
# integration, and so an InferenceService, whose labels KServe copies to its Deployment. A GPU
# workload of any other kind could not be queued at all.
QUEUEABLE = {
    "RayCluster", "RayJob", "Job", "JobSet", "Pod", "Deployment", "StatefulSet",
    "LeaderWorkerSet", "TrainJob", "InferenceService",
}  # fmt: skip
# Templates that workloads refer to; the workload made from one carries the label.
TEMPLATES = {"ServingRuntime", "ClusterServingRuntime", "TrainingRuntime", "ClusterTrainingRuntime"}
# Every kustomization a user or an admin applies (overlays/*, cluster/*), listed or not.
APPLIED = sorted(
    str(p.parent.relative_to(MANIFESTS)) for p in MANIFESTS.glob("*/*/kustomization.yaml")
)


def _requests_gpus(obj: Any) -> bool:
    """Whether any resource requests/limits in `obj` ask for a GPU (`*/gpu`, more than 0)."""
    if isinstance(obj, list):
        return any(_requests_gpus(v) for v in obj)
    if not isinstance(obj, dict):
        return False
    for key in ("requests", "limits"):
        amounts = obj.get(key)
        if isinstance(amounts, dict) and any(
            name.endswith("/gpu") and str(n) not in {"", "0"} for name, n in amounts.items()
        ):
            return True
    return any(_requests_gpus(v) for v in obj.values())


def _queue(obj: dict[str, Any]) -> str | None:
    return (obj["metadata"].get("labels") or {}).get(kube.QUEUE_LABEL)


def _trainjob_body():
    """`trainjob_body` when the TrainJob launcher exists (it is being written), else None."""
    try:
        module = importlib.import_module("kiln.components.pretrain.trainjob_launch")
    except ModuleNotFoundError as e:
        if e.name != "kiln.components.pretrain.trainjob_launch":
            raise  # the module exists but is broken: that is a failure, not an absence
        return None
    return getattr(module, "trainjob_body", None)


def _rendered_workloads(queue_name: str | None) -> list[dict[str, Any]]:
    """What Kiln renders at run time: InferenceServices (GPU and CPU) and, when the launcher
    exists, a GPU TrainJob; `queue_name=None` leaves every default in place."""
    kw = {} if queue_name is None else {"queue_name": queue_name}
    objects = [
        render_inference_service("kiln-tiny", "s3://models/tiny/model", namespace="ns", **kw),
        render_inference_service(
            "kiln-tiny-cpu", "s3://models/tiny/model", namespace="ns", gpus=0, **kw
        ),
    ]
    trainjob_body = _trainjob_body()
    if trainjob_body is not None:
        cfg = load_config("tiny", overrides=["dist.workers=2", "dist.use_gpu=true"])
        objects.append(trainjob_body(cfg, "s3://kiln/tokens", "s3://kiln/train", **kw))
    return objects


def _gpu_executor_labels(compile_fn, tmp_path: Path, opts: PipelineOptions) -> dict[str, dict]:
    """`{executor: pod labels}` for the executors of a compiled pipeline that request GPUs."""
    docs = list(yaml.safe_load_all(Path(compile_fn(str(tmp_path / "p.yaml"), opts)).read_text()))
    spec = next(d for d in docs if "deploymentSpec" in d)["deploymentSpec"]["executors"]
    platform = next(d for d in docs if "platforms" in d)
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    labels = {name: (k8s.get(name) or {}).get("podMetadata", {}).get("labels", {}) for name in spec}
    gpu = {
        name for name, ex in spec.items() if "accelerator" in ex["container"].get("resources", {})
    }
    assert all(kube.QUEUE_LABEL not in labels[name] for name in set(spec) - gpu), (
        "only the GPU (training) pods are queued; the data and evaluation steps need no quota"
    )
    return {name: labels[name] for name in gpu}


def test_the_default_queue_is_the_local_queue_the_manifests_ship(rendered, validate_crd):
    for overlay in ("overlays/openshift", "overlays/kubeflow", "overlays/dev"):
        [local] = [o for o in rendered[overlay] if o["kind"] == "LocalQueue"]
        assert local["metadata"]["name"] == QUEUE, overlay
        validate_crd(local)
    assert PipelineOptions().queue_name == QUEUE
    assert load_config(None).publish.serving_queue == QUEUE
    # The LocalQueue feeds the admin's ClusterQueue, whose flavors cover GPUs.
    cluster = rendered["cluster/kueue"]
    [queue] = [o for o in cluster if o["kind"] == "ClusterQueue"]
    assert local["spec"]["clusterQueue"] == queue["metadata"]["name"]
    covered = {r for g in queue["spec"]["resourceGroups"] for r in g["coveredResources"]}
    assert {"cpu", "memory", PipelineOptions().gpu_resource} <= covered
    for obj in cluster:
        assert obj["apiVersion"] == "kueue.x-k8s.io/v1beta2", obj["kind"]  # the stable API
        validate_crd(obj)


@pytest.mark.parametrize("queue_name", [None, CUSTOM, ""])
@pytest.mark.parametrize("pipeline", list(PIPELINES))
def test_pipeline_training_pods_carry_the_queue_label(tmp_path, pipeline, queue_name):
    compile_fn, expected = PIPELINES[pipeline]
    opts = PipelineOptions() if queue_name is None else PipelineOptions(queue_name=queue_name)
    labels = _gpu_executor_labels(compile_fn, tmp_path, opts)
    assert set(labels) == expected
    want = QUEUE if queue_name is None else queue_name
    for name, pod_labels in labels.items():
        assert pod_labels.get(kube.QUEUE_LABEL) == (want or None), name


def test_compile_flag_sets_the_queue(tmp_path, capsys):
    from kiln.pipelines.cli import main

    out = tmp_path / "sft.yaml"
    assert main(["compile", "--pipeline", "sft", "-o", str(out), "--queue-name", CUSTOM]) == 0
    assert f"{kube.QUEUE_LABEL}: {CUSTOM}" in out.read_text()
    # The step hands the same queue to a TrainJob it creates (dist.launcher=trainjob).
    spec = next(d for d in yaml.safe_load_all(out.read_text()) if "deploymentSpec" in d)
    env = spec["deploymentSpec"]["executors"]["exec-sft"]["container"]["env"]
    assert {"name": "KILN_QUEUE_NAME", "value": CUSTOM} in env
    assert main(["compile", "-o", str(out), "--queue-name", "Team_GPUs"]) == 2
    assert "queue_name: 'Team_GPUs' is not a valid name" in capsys.readouterr().err


@pytest.mark.parametrize("kustomization", APPLIED)
def test_every_shipped_gpu_workload_is_queued(rendered, kustomize, kustomization):
    objects = rendered.get(kustomization) or kustomize(MANIFESTS / kustomization)
    queues = {o["metadata"]["name"] for o in objects if o["kind"] == "LocalQueue"}
    gpu = [o for o in objects if o["kind"] not in TEMPLATES and _requests_gpus(o)]
    for obj in gpu:
        where = f"{kustomization}: {obj['kind']}/{obj['metadata']['name']}"
        assert obj["kind"] in QUEUEABLE, f"{where}: Kueue cannot queue this kind"
        assert _queue(obj) in queues, f"{where}: label {_queue(obj)!r}, LocalQueues {queues}"
    if kustomization.startswith("overlays/"):
        assert {o["kind"] for o in gpu} == {"RayCluster"}  # its GPU worker group


def test_renaming_the_local_queue_moves_the_ray_cluster_label(kustomize, tmp_path):
    """One edit: the RayCluster's label follows the LocalQueue's name (a kustomize replacement)."""
    shutil.copytree(MANIFESTS, tmp_path / "manifests")
    local = tmp_path / "manifests" / "base" / "kueue-localqueue.yaml"
    assert f"\n  name: {QUEUE}\n" in local.read_text()
    local.write_text(local.read_text().replace(f"\n  name: {QUEUE}\n", f"\n  name: {CUSTOM}\n"))
    objs = kustomize(tmp_path / "manifests" / "overlays" / "kubeflow")
    [ray] = [o for o in objs if o["kind"] == "RayCluster"]
    assert _queue(ray) == CUSTOM


@pytest.mark.parametrize("queue_name", [None, CUSTOM, ""])
def test_rendered_workloads_carry_the_queue_label(validate_crd, queue_name):
    want = QUEUE if queue_name is None else queue_name
    for obj in _rendered_workloads(queue_name):
        validate_crd(obj)
        # KServe copies an InferenceService's labels to its predictor Deployment and pods, where
        # Kueue's Deployment integration reads it; a CPU predictor still uses cpu/memory quota.
        assert _queue(obj) == (want or None), f"{obj['kind']}/{obj['metadata']['name']}"


def test_a_bad_queue_name_is_refused():
    with pytest.raises(ValueError, match="queue_name"):
        render_inference_service("kiln-tiny", "s3://m/model", namespace="ns", queue_name="a b")
    with pytest.raises(ValueError, match="queue_name"):
        PipelineOptions(queue_name="-queue")
