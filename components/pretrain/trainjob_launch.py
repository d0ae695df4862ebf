"""Run training as a Kubeflow Trainer v2 TrainJob (`dist.launcher=trainjob`), with the Kubeflow SDK.

    body = trainjob_body(cfg, "s3://kiln/runs/r1/train/tokens", "/tmp/kiln-jobs/r1")
    run_trainjob(body)          # create it (or follow the one already running), stream node 0, wait

The TrainJob runs `kiln_train_node` (shipped by the SDK's `CustomTrainer`, started by torchrun)
on the ClusterTrainingRuntime `kiln-torch-distributed` (manifests/cluster/trainer) in Kiln's GPU
image: `dist.workers` nodes, one process (and one GPU with `dist.use_gpu`) each. Its settings are
plain env values (trainjob_node.NODE_ENV); the data-connection keys come from the Secret by
reference, never as values; `kueue.x-k8s.io/queue-name` queues it. `trainjob_body` is the exact
object `run_trainjob` creates, built with the SDK's `CustomTrainer` conversion and API models
and created with the Kubernetes API: `TrainerClient.train` (SDK 0.5) cannot set
`trainer.numProcPerNode` nor env from a Secret. `TrainerClient` checks the runtime, follows the
job and reads its log. Only this module of the stage imports `kubeflow`, lazily.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from kiln.components.common import kube
from kiln.components.common.config import Config
from kiln.components.common.errors import UserError
from kiln.components.common.images import image_ref
from kiln.components.pretrain.trainjob_node import NODE_ENV

log = logging.getLogger("kiln.trainjob")
API_GROUP, API_VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
RUNTIME = "kiln-torch-distributed"  # manifests/cluster/trainer/clustertrainingruntime-torch.yaml
NODE = "node"  # the torch runtime's replicated job and trainer container
# The OpenShift AI data-connection keys (pipelines/pretrain.py gives the steps the same ones).
DATA_CONNECTION_KEYS = tuple(
    "AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_S3_ENDPOINT AWS_S3_BUCKET AWS_DEFAULT_REGION".split()
)
# What the pipeline step reads besides the config (see train_as_trainjob).
QUEUE_ENV, SECRET_ENV, PVC_ENV = "KILN_QUEUE_NAME", "KILN_DATA_CONNECTION", "KILN_SHARED_PVC"
WAIT_S = 7 * 24 * 3600  # a queued job may wait long for quota; the step's own timeout rules


def kiln_train_node():
    """Runs in every TrainJob process; the SDK ships this source, torchrun starts it."""
    from kiln.components.pretrain.trainjob_node import main

    main()


def job_name(output_uri: str) -> str:
    """The TrainJob's name, the same for every attempt of one run (a retried step finds it)."""
    return "kiln-train-" + hashlib.sha256(output_uri.encode()).hexdigest()[:10]


def node_resources(cfg: Config) -> dict[str, str]:
    """Requests (= limits) per node: one GPU with dist.use_gpu; dist.cpus_per_worker and
    dist.memory_per_worker when set (else the runtime's)."""
    out = {}
    if cfg.dist.cpus_per_worker:
        out["cpu"] = str(cfg.dist.cpus_per_worker)
    if cfg.dist.memory_per_worker:
        out["memory"] = cfg.dist.memory_per_worker
    if cfg.dist.use_gpu:
        out["nvidia.com/gpu"] = "1"
    return out


def _shared_volume_patch(pvc: str, mount: str) -> dict[str, Any]:
    """A runtime patch mounting the PVC `pvc` at `mount` in every node (the step's staging)."""
    pod = {
        "volumes": [{"name": "kiln-shared", "persistentVolumeClaim": {"claimName": pvc}}],
        "containers": [
            {"name": NODE, "volumeMounts": [{"name": "kiln-shared", "mountPath": mount}]}
        ],
    }
    job = {"name": NODE, "template": {"spec": {"template": {"spec": pod}}}}
    return {
        "manager": "kiln.components.pretrain/trainjob",  # who owns this patch entry
        "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [job]}}},
    }


def trainjob_body(
    cfg: Config,
    tokens_uri: str,
    output_uri: str,
    *,
    queue_name: str = kube.LOCAL_QUEUE,
    secret_name: str = kube.DATA_CONNECTION_SECRET,
    image: str = "",
    name: str = "",
    runtime: str = RUNTIME,
    shared_pvc: str = "",
    shared_mount: str = "",
) -> dict[str, Any]:
    """The TrainJob that trains `cfg` on `tokens_uri` into `output_uri` (paths as the nodes see
    them: s3:// or a shared volume), exactly as `run_trainjob` creates it.

    Args:
        queue_name: Kueue LocalQueue ('' = no queue label).
        secret_name: the data-connection Secret, referenced key by key (optional keys).
        image: the trainer image (default: Kiln's GPU image, `images.image_ref("gpu")`).
        name: the TrainJob's name (default: `job_name(output_uri)`).
        runtime: the ClusterTrainingRuntime (torch) to run on.
        shared_pvc, shared_mount: mount this PVC at this path in every node ('' = none).
    """
    from kubeflow.trainer import CustomTrainer, Runtime, RuntimeKind, RuntimeTrainer, TrainerType
    from kubeflow.trainer.backends.kubernetes.utils import get_trainer_cr_from_custom_trainer
    from kubeflow.trainer.constants.constants import TORCH_COMMAND
    from kubeflow_trainer_api import models

    image = image or image_ref("gpu")
    settings = {"config": json.dumps(cfg.to_dict()), "tokens": tokens_uri, "output": output_uri}
    custom = CustomTrainer(
        func=kiln_train_node,
        image=image,
        num_nodes=max(1, cfg.dist.workers),
        resources_per_node=node_resources(cfg) or None,
        env={NODE_ENV[key]: value for key, value in settings.items()},
    )
    torch_trainer = RuntimeTrainer(
        trainer_type=TrainerType.CUSTOM_TRAINER, framework="torch", image=image
    )
    torch_trainer.set_command(TORCH_COMMAND)  # what the SDK reads off a torch runtime
    torch_runtime = Runtime(
        name=runtime, trainer=torch_trainer, kind=RuntimeKind.CLUSTER_TRAINING_RUNTIME
    )
    trainer = get_trainer_cr_from_custom_trainer(torch_runtime, custom).to_dict()
    trainer["numProcPerNode"] = 1  # one process, one GPU per node: a node is what a Ray worker is
    secret = {"name": secret_name, "optional": True}  # a key the Secret lacks is left unset
    trainer["env"] += [
        {"name": key, "valueFrom": {"secretKeyRef": {**secret, "key": key}}}
        for key in DATA_CONNECTION_KEYS
    ]
    spec: dict[str, Any] = {
        "runtimeRef": {"name": runtime, "kind": RuntimeKind.CLUSTER_TRAINING_RUNTIME.value},
        "trainer": trainer,
    }
    if shared_pvc:
        spec["runtimePatches"] = [_shared_volume_patch(shared_pvc, shared_mount)]
    name = kube.dns_label(name or job_name(output_uri), "TrainJob name")
    metadata = {"name": name, "labels": {**kube.queue_labels(queue_name, "queue_name")}}
    body = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "TrainJob", "metadata": metadata}
    # Through the SDK's models: a field they do not know fails here, not on the cluster.
    return models.TrainerV1alpha1TrainJob.from_dict({**body, "spec": spec}).to_dict()


def _clients(namespace: str):
    """(TrainerClient, CustomObjectsApi, namespace) for the current Kubernetes config."""
    from kubeflow.trainer import KubernetesBackendConfig, TrainerClient
    from kubernetes import client, config

    try:
        api = kube.api_client()
    except config.ConfigException as e:
        raise UserError(
            f"dist.launcher=trainjob needs a Kubernetes cluster: run in a pod with a service "
            f"account, or point KUBECONFIG at a kubeconfig with a current context ({e})"
        ) from None
    namespace = namespace or kube.current_namespace()
    backend = KubernetesBackendConfig(namespace=namespace, client_configuration=api.configuration)
    return TrainerClient(backend), client.CustomObjectsApi(api), namespace


def _conditions(obj: dict[str, Any]) -> set[str]:
    return {c["type"] for c in obj.get("status", {}).get("conditions", []) if c["status"] == "True"}


def _existing(api, namespace: str, name: str) -> dict[str, Any] | None:
    from kubernetes.client import ApiException

    try:
        return api.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def _create(api, namespace: str, body: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Create `body`, replacing `old`: a finished attempt of this run (its checkpoints stay)."""
    from kubernetes.client import ApiException

    name = body["metadata"]["name"]
    if old is not None:
        api.delete_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
        while _existing(api, namespace, name) is not None:
            time.sleep(2)
    try:
        api.create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, body)
    except ApiException as e:
        hint = {
            404: f"no TrainJob API ({API_GROUP}/{API_VERSION}) on this cluster: install Kubeflow "
            "Trainer v2, or use dist.launcher=ray",
            403: f"not allowed to create TrainJobs in {namespace}: bind the Role kiln-pipeline "
            "(manifests/base/rbac.yaml) to this service account",
        }.get(e.status)
        if hint is None:
            raise
        raise UserError(hint) from None


def run_trainjob(body: dict[str, Any], namespace: str = "", stream=None) -> str:
    """Create the TrainJob `body` (or follow it when an attempt is still running), stream node
    0's log to `stream` (default stdout) and wait until it ends; returns its name.

    Raises:
        UserError: no Kubernetes config, no TrainJob API or runtime, or no permission.
        RuntimeError: the TrainJob failed.
    """
    trainer, api, namespace = _clients(namespace)
    name, runtime = body["metadata"]["name"], body["spec"]["runtimeRef"]["name"]
    try:
        trainer.get_runtime(runtime)
    except RuntimeError:
        raise UserError(
            f"ClusterTrainingRuntime {runtime} not found (or not readable): an admin applies "
            "manifests/cluster/trainer (docs/platform.md)"
        ) from None
    old = _existing(api, namespace, name)
    if old is not None and not _conditions(old) & {"Complete", "Failed"}:
        log.info("TrainJob %s/%s is already running: following it", namespace, name)
    else:
        _create(api, namespace, body, old)
        nodes = body["spec"]["trainer"]["numNodes"]
        log.info("created TrainJob %s/%s: %d node(s) on %s", namespace, name, nodes, runtime)
    # Created (queued by Kueue, pods starting) → Running → Complete | Failed.
    trainer.wait_for_job_status(name, {"Running", "Complete", "Failed"}, WAIT_S, 10)
    stream = stream or sys.stdout
    for line in trainer.get_job_logs(name, follow=True):
        stream.write(line if line.endswith("\n") else line + "\n")
        stream.flush()
    try:
        trainer.wait_for_job_status(name, {"Complete"}, WAIT_S, 10)
    except RuntimeError:
        raise RuntimeError(
            f"TrainJob {namespace}/{name} failed: see the log above and "
            f"`kubectl -n {namespace} describe trainjob {name}`"
        ) from None
    return name


def train_as_trainjob(
    cfg: Config,
    tokens: Path | str,
    out: Path,
    run_key: str,
    s3_root: str | None,
    shared_dir: str = "",
) -> str | None:
    """The pipeline step's training as a TrainJob; returns the final checkpoint, copied to
    OUTPUT/checkpoints/step_N (with OUTPUT/train_log.jsonl) where the step exports it.

    The nodes must see the tokens and the output: with real S3 (`s3_root`) and no shared volume,
    the shards are uploaded (verified) and checkpoints go to S3 beside the Ray path's
    (RUN/train/ray/checkpoints); with `shared_dir` and $KILN_SHARED_PVC (its claim), both are
    staged on that volume, mounted in the nodes at the same path; else they go as they are.
    $KILN_QUEUE_NAME and $KILN_DATA_CONNECTION name the queue and the Secret.
    """
    from kiln.components.pretrain import checkpoint_store
    from kiln.components.pretrain.step import run_name, stage_on_s3, stage_on_shared
    from kiln.components.pretrain.train_log import TRAIN_LOG

    run, pvc, staged = run_name(run_key, out), os.environ.get(PVC_ENV, ""), None
    extra = {"queue_name": os.environ.get(QUEUE_ENV, kube.LOCAL_QUEUE)}
    extra["secret_name"] = os.environ.get(SECRET_ENV) or kube.DATA_CONNECTION_SECRET
    if s3_root and not shared_dir:
        cfg, tokens_uri, output_uri = stage_on_s3(cfg, Path(tokens), s3_root, run)
    elif shared_dir and pvc:
        job_tokens, staged = stage_on_shared(shared_dir, run, Path(tokens))
        tokens_uri, output_uri = str(job_tokens), str(staged)
        extra.update(shared_pvc=pvc, shared_mount=shared_dir)
    else:
        log.warning(
            "no S3 and no shared volume: the TrainJob nodes must see %s and %s", tokens, out
        )
        tokens_uri = tokens if isinstance(tokens, str) else str(tokens.resolve())  # s3:// as is
        output_uri = str(out.resolve())
    run_trainjob(trainjob_body(cfg, tokens_uri, output_uri, **extra))
    if staged is not None and staged.is_dir():
        shutil.copytree(staged, out, dirs_exist_ok=True)
    found = checkpoint_store.newest(checkpoint_store.resume_roots(cfg.dist.storage_path, out))
    if found is None:
        return None
    final = checkpoint_store.copy_into(found, out / "checkpoints")
    if (final / TRAIN_LOG).exists():
        shutil.copyfile(final / TRAIN_LOG, out / TRAIN_LOG)
    return str(final)
