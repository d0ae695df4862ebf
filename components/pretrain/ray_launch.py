"""Run the training loop under Ray Train, locally or on a cluster, or submit it as a Ray job.

Three ways in, one training function (`train.Trainer`):

    launch(cfg, tokens, out)                       # TorchTrainer, cfg.dist.workers workers (local Ray or
                                                   # the cluster in cfg.dist.ray_address / RAY_ADDRESS)
    submit_job(cfg, tokens, out, "http://head:8265")   # Ray Jobs API: runs `kiln train` on the cluster,
                                                   # streams its logs, raises if the job fails

Scaling lives only in `ScalingConfig`. A dead worker restarts the group from the last reported
checkpoint (`FailureConfig.max_failures`); a re-run with the same output resumes the same run.
This is the only module of the stage that imports Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

try:  # Ray Train v2 internals (Ray is pinned to 2.60.*); without them LocalClusterTrainer is stock
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import (
        PlacementGroupCleanerCallback,
    )
    from ray.train.v2._internal.execution.scaling_policy.fixed import FixedScalingPolicy
except ImportError:  # pragma: no cover - a Ray that moved them
    DatasetsCallback = PlacementGroupCleanerCallback = FixedScalingPolicy = None

from kiln.components.common.config import Config, from_dict
from kiln.components.pretrain import checkpoint as ckpt
from kiln.components.pretrain import host_cpu
from kiln.components.pretrain.runtime import Runtime
from kiln.components.pretrain.train import Trainer, local_param_count

log = logging.getLogger("kiln.ray")
RUN_NAME = "train"
# Ray timers a cluster on one machine can run slower or without: fewer wakeups that take a core
# from training (host_cpu). The raylet's timers matter most: it keeps normal priority (it starts
# the workers). Ray's defaults: 10 s, 100 ms, 1 s, 250 ms, on; raylet 100, 100, 100, 200, 250 ms.
QUIET_LOCAL_CLUSTER = {
    "metrics_report_interval_ms": 60_000,
    "raylet_report_resources_period_milliseconds": 1_000,
    "task_events_report_interval_ms": 10_000,
    "io_context_event_loop_lag_collection_interval_ms": -1,
    "event_stats": False,
    "raylet_check_gc_period_milliseconds": 1_000,  # memory-pressure GC requests to workers
    "object_manager_timer_freq_ms": 1_000,  # object transfers: none between nodes on one machine
    "local_fs_monitor_interval_ms": 1_000,  # disk-full check for spilling
    "kill_idle_workers_interval_ms": 1_000,  # reaping idle pooled workers
    "memory_monitor_refresh_ms": 1_000,  # the OOM killer looks once a second
    "gcs_pull_resource_loads_period_milliseconds": 5_000,  # queued work, for the autoscaler
}
# The same for Ray's Python daemons, read from their environment (inherited from this process).
QUIET_LOCAL_DAEMONS = {
    # The log monitor lists the session's log files with a glob on every 0.1 s pass when there
    # are fewer than this many; with 0, only every LOG_NAME_UPDATE_INTERVAL_S (its default).
    "RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": "0",
    # The autoscaler's monitor refreshes cluster status every 5 s; a fixed local cluster has
    # nothing to scale (`ray status` may lag by this much).
    "AUTOSCALER_UPDATE_INTERVAL_S": "30",
    # The dashboard agent's reporter reads every worker's process stats (psutil) every 5 s for a
    # dashboard that a cluster Kiln starts does not run (include_dashboard=False).
    "REPORTER_UPDATE_INTERVAL_MS": "60000",
    # The dashboard process (Ray starts a minimal one even then) records its own CPU and memory
    # every 5 s, reading /proc/<pid>/smaps.
    "METRICS_RECORD_INTERVAL_S": "60",
}


if FixedScalingPolicy is not None:

    class FixedLocalScaling(FixedScalingPolicy):
        """Ray Train's fixed-size scaling without resource requests to the cluster autoscaler:
        a cluster this process started has none, and the `_AutoscalingCoordinatorActor` that
        would relay them is one more process waking on a training core."""

        def after_controller_start(self, train_run_context) -> None:
            pass

        def _maybe_send_resource_request(self) -> None:
            pass

else:  # pragma: no cover - a Ray that moved it
    FixedLocalScaling = None


class LocalClusterTrainer(TorchTrainer):
    """A TorchTrainer for a Ray cluster this process started, which ends when it does.

    It leaves out three of Ray Train's helper actors, each a process whose core worker wakes
    ~70 times/s and takes ~4 ms/s of CPU from the training threads (host_cpu): the
    PlacementGroupCleaner, which frees the run's placement group if the Train controller dies
    (here the cluster goes with the driver); when no Ray Datasets are given (Kiln reads its own
    token shards), the DatasetManager; and the autoscaling coordinator (`FixedLocalScaling`).
    Ray's "Failed to stop PlacementGroupCleaner gracefully" at the end of a run goes too.
    """

    def _create_default_callbacks(self):
        unneeded = [PlacementGroupCleanerCallback]
        if not self.datasets:
            unneeded.append(DatasetsCallback)
        unneeded = tuple(c for c in unneeded if c is not None)
        return [c for c in super()._create_default_callbacks() if not isinstance(c, unneeded)]

    def _initialize_and_run_controller(self, **controller_init_kwargs):
        policy = controller_init_kwargs.get("scaling_policy")
        if FixedLocalScaling is not None and type(policy) is FixedScalingPolicy:
            controller_init_kwargs["scaling_policy"] = FixedLocalScaling(self.scaling_config)
        return super()._initialize_and_run_controller(**controller_init_kwargs)


class RayRuntime(Runtime):
    """A Ray Train worker: checkpoints are reported to Ray, which persists them to storage."""

    @contextlib.contextmanager
    def restore(self) -> Iterator[Path | None]:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as directory:
            yield Path(directory)

    def save(self, step: int, writer, metrics: dict[str, float], keep: int) -> None:
        # Every worker must call report the same number of times; only rank 0 attaches files.
        if self.rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="kiln-ckpt-") as tmp:
            directory = Path(tmp) / f"step_{step}"
            writer(directory)
            ray.train.report(
                metrics,
                checkpoint=Checkpoint.from_directory(directory),
                checkpoint_dir_name=f"step_{step}",
            )


def train_loop_per_worker(config: dict) -> None:
    """Entry point on every Ray Train worker."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    ctx = ray.train.get_context()
    runtime = RayRuntime(
        output_dir=Path(config["output_dir"]),
        rank=ctx.get_world_rank(),
        world_size=ctx.get_world_size(),
        local_rank=ctx.get_local_rank(),
        device=ray.train.torch.get_device(),
    )
    # On a cluster the driver started for this run, Ray's own processes yield the cores (host_cpu).
    local_cluster = config.get("local_cluster", False)
    if local_cluster:
        # Its processes run with a long timer slack; training must not. Before any torch work,
        # so the OpenMP threads this thread starts inherit the normal slack too.
        host_cpu.set_timer_slack(host_cpu.DEFAULT_TIMER_SLACK_NS)
        if runtime.world_size == 1 and torch.distributed.is_initialized():
            # One worker has no collectives; its gloo group's loop would only tick.
            torch.distributed.destroy_process_group()
    trainer = Trainer(from_dict(config["cfg"]), config["tokens_dir"], runtime)
    if local_cluster:
        host_cpu.idle_own_control_threads(runtime.world_size)
    # Where each worker landed and what it holds: for debugging placement and for the tests.
    record = Path(config["output_dir"]) / "workers" / f"rank_{runtime.rank}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    where = {
        "rank": runtime.rank,
        "node_ip": ray.util.get_node_ip_address(),
        "node_id": ctx.get_node_id() if hasattr(ctx, "get_node_id") else "",
        "pid": os.getpid(),
        "device": str(runtime.device),
        "torch_threads": torch.get_num_threads(),
        "timer_slack_ns": host_cpu.timer_slack(),
        "strategy": trainer.cfg.dist.strategy if runtime.world_size > 1 else "none",
        "local_params": local_param_count(trainer.model),
    }
    record.write_text(json.dumps(where))
    log.info(
        "worker rank %d on node %s (pid %d, %s)",
        runtime.rank,
        where["node_ip"],
        where["pid"],
        where["device"],
    )
    trainer.fit()
    # The local cluster's control plane runs at idle priority (host_cpu); training never may.
    where["training_thread_idle"] = host_cpu.is_idle(threading.get_native_id())
    record.write_text(json.dumps(where))


@dataclass
class LaunchResult:
    checkpoint: str | None  # the final checkpoint: a local path, or a path inside `filesystem`
    metrics: dict
    filesystem: object | None = None  # pyarrow filesystem for remote (s3://) storage


def _storage(path: str) -> tuple[str, object | None]:
    """Ray storage path and filesystem: a local dir (no filesystem object), or s3:// with the
    endpoint from the environment."""
    if not path.startswith("s3://"):
        return path, None
    import pyarrow.fs

    endpoint = os.environ.get("AWS_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL") or ""
    scheme = "http" if endpoint.startswith("http://") else "https"
    fs = pyarrow.fs.S3FileSystem(
        endpoint_override=endpoint.split("://", 1)[-1] or None,
        scheme=scheme,
        region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
    )
    return path.removeprefix("s3://"), fs


def ensure_ray(address: str = "") -> None:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local one bound to loopback."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS", "")
    if address and address != "local":
        ray.init(address=address, log_to_driver=True)
        return
    if sys.platform == "linux":
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # local workers talk over loopback
    # Ray runs workers at nice 15 by default; on a local machine training *is* the work, and a
    # de-prioritised worker loses its cores to every other process (-18% tokens/s measured here).
    os.environ.setdefault("RAY_worker_niceness", "0")
    # A one-machine cluster needs no preemption watcher (read by the Train controller, so set
    # before Ray starts its processes, which inherit this environment).
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    for name, value in QUIET_LOCAL_DAEMONS.items():
        os.environ.setdefault(name, value)
    # address="local": always a fresh private cluster, never one a stale `ray start` left behind.
    # Its processes get a long timer slack and fewer timers (host_cpu's docstring says why).
    with host_cpu.slack_for_children():
        ray.init(
            address="local",
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=True,
            _system_config=QUIET_LOCAL_CLUSTER,
        )


def cpus_per_worker(cfg: Config, own_cluster: bool) -> int:
    """`dist.cpus_per_worker`, or when 0: on a cluster this process started, its CPUs split
    evenly among the workers (so one worker trains on the whole machine, as a plain process
    does); on a cluster it joined, 1."""
    if cfg.dist.cpus_per_worker or not own_cluster:
        return cfg.dist.cpus_per_worker or 1
    nodes = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]]
    per_node = -(-max(1, cfg.dist.workers) // max(1, len(nodes)))  # workers per node, rounded up
    return max(1, int(min(nodes, default=1)) // per_node)


def launch(
    cfg: Config, tokens_dir: str | Path, output_dir: str | Path, resume: bool = False
) -> LaunchResult:
    """Train with `cfg.dist.workers` Ray Train workers; returns the final checkpoint and metrics.

    Re-running with the same output directory and `resume=True` continues the same run from its
    latest checkpoint; without it an existing run is an error, so nothing is silently overwritten.
    """
    output_dir = Path(output_dir).resolve()
    storage_path, storage_fs = _storage(cfg.dist.storage_path or str(output_dir / "ray"))
    if storage_fs is None and not resume and (Path(storage_path) / RUN_NAME).exists():
        raise ValueError(
            f"{Path(storage_path) / RUN_NAME} already holds a run: pass --resume to continue it, or use a new --output"
        )
    tokens = (
        str(tokens_dir) if str(tokens_dir).startswith("s3://") else str(Path(tokens_dir).resolve())
    )
    ensure_ray(cfg.dist.ray_address)
    own_cluster = host_cpu.owns_ray_cluster()  # started by this process, so local to it
    env = (
        {"GLOO_SOCKET_IFNAME": os.environ["GLOO_SOCKET_IFNAME"]}
        if "GLOO_SOCKET_IFNAME" in os.environ
        else {}
    )
    trainer = (LocalClusterTrainer if own_cluster else TorchTrainer)(
        train_loop_per_worker,
        train_loop_config={
            "cfg": cfg.to_dict(),
            "tokens_dir": tokens,
            "output_dir": str(output_dir),
            "local_cluster": own_cluster,
        },
        torch_config=TorchConfig(backend="nccl" if cfg.dist.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=cfg.dist.workers,
            use_gpu=cfg.dist.use_gpu,
            resources_per_worker={
                "CPU": cpus_per_worker(cfg, own_cluster),
                **({"GPU": 1} if cfg.dist.use_gpu else {}),
            },
        ),
        run_config=RunConfig(
            name=RUN_NAME,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=FailureConfig(max_failures=cfg.dist.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
            worker_runtime_env={"env_vars": env} if env else None,
        ),
    )
    with host_cpu.idle_control_plane() if own_cluster else contextlib.nullcontext():
        result = trainer.fit()
    if result.error:
        raise result.error
    return LaunchResult(
        checkpoint=result.checkpoint.path if result.checkpoint else None,
        metrics=dict(result.metrics or {}),
        filesystem=storage_fs,
    )


@contextlib.contextmanager
def local_checkpoint(result: LaunchResult) -> Iterator[Path | None]:
    """The final checkpoint as a local directory (downloaded from storage when remote)."""
    if result.checkpoint is None:
        yield None
    elif result.filesystem is None:
        yield Path(result.checkpoint)
    else:
        with Checkpoint(result.checkpoint, filesystem=result.filesystem).as_directory() as d:
            yield Path(d)


def copy_final_checkpoint(result: LaunchResult, destination: Path) -> Path | None:
    """Copy the final checkpoint into `destination/checkpoints/step_N` (what the plain runner writes)."""
    with local_checkpoint(result) as directory:
        if directory is None:
            return None
        step = int(ckpt.read_checkpoint(directory)["trainer_state"]["step"])

        def writer(tmp: Path) -> None:
            shutil.copytree(directory, tmp)

        return ckpt.save_atomic(destination / "checkpoints", step, writer)


def _run_filesystem(storage_path: str):
    """(path, pyarrow filesystem) of a storage path, local ones included."""
    import pyarrow.fs

    path, fs = _storage(storage_path)
    return path, fs or pyarrow.fs.LocalFileSystem()


def fetch_latest_checkpoint(storage_path: str, destination: Path) -> Path | None:
    """Copy the newest `step_N` checkpoint of the run stored at `storage_path` (local or
    s3://, as in `dist.storage_path`) into `destination/checkpoints/step_N`."""
    import pyarrow.fs

    path, fs = _run_filesystem(storage_path)
    run = f"{path.rstrip('/')}/{RUN_NAME}"
    found = fs.get_file_info(pyarrow.fs.FileSelector(run, allow_not_found=True))
    steps = [
        (int(i.base_name[5:]), i.path)
        for i in found
        if i.base_name.startswith("step_") and i.base_name[5:].isdigit()
    ]
    if not steps:
        return None
    step, latest = max(steps)

    def writer(tmp: Path) -> None:
        Checkpoint(latest, filesystem=fs).to_directory(str(tmp))

    return ckpt.save_atomic(destination / "checkpoints", step, writer)


def run_exists(storage_path: str) -> bool:
    """Whether `storage_path` (local or s3://) already holds a Ray Train run to resume."""
    import pyarrow.fs

    path, fs = _run_filesystem(storage_path)
    info = fs.get_file_info(f"{path.rstrip('/')}/{RUN_NAME}")
    return info.type != pyarrow.fs.FileType.NotFound


# ---------------------------------------------------------------------------------- Jobs API
def submit_job(
    cfg: Config,
    tokens_dir: str,
    output_dir: str,
    address: str,
    resume: bool = True,
    wait: bool = True,
    stream=None,
) -> str:
    """Submit `kiln train` to a Ray cluster's Jobs API, stream its logs, return the job id.

    Paths must be valid on the cluster (shared storage or s3://). Raises RuntimeError when the
    job ends FAILED or STOPPED.
    """
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)
    args = [
        "kiln",
        "train",
        "--tokens",
        str(tokens_dir),
        "--output",
        str(output_dir),
        "--config-json",
        cfg.to_json(),
    ]
    args += ["--workers", str(cfg.dist.workers)] + (["--resume"] if resume else [])
    forwarded = {
        k: v
        for k, v in os.environ.items()
        if k.startswith(("AWS_", "MLFLOW_TRACKING_URI", "KILN_"))
    }
    runtime_env = {"env_vars": forwarded} if forwarded else None
    for attempt in range(30):  # a freshly started head answers before its job agent is up
        try:
            job_id = client.submit_job(entrypoint=shlex.join(args), runtime_env=runtime_env)
            break
        except RuntimeError as e:
            if "No available agent" not in str(e) or attempt == 29:
                raise
            log.info("Ray job agent not ready yet; retrying")
            time.sleep(2)
    log.info("submitted Ray job %s to %s", job_id, address)
    if not wait:
        return job_id
    stream = stream or sys.stdout

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            stream.write(chunk)
            stream.flush()

    asyncio.run(tail())
    status = client.get_job_status(job_id)
    if status != JobStatus.SUCCEEDED:
        info = client.get_job_info(job_id)
        raise RuntimeError(
            f"Ray job {job_id} ended {status}: {info.message or 'see the logs above'}"
        )
    return job_id
