"""Run the training loop under Ray Train, locally or on a cluster, or submit it as a Ray job.

Two ways in, one training function (`train.Trainer`):

    launch(cfg, tokens, out)                       # TorchTrainer, cfg.dist.workers workers (local Ray or
                                                   # the cluster in cfg.dist.ray_address / RAY_ADDRESS)
    submit_job(cfg, tokens, out, "http://head:8265")   # Ray Jobs API: runs `kiln train` on the cluster,
                                                   # streams its logs, raises if the job fails

Stock Ray Train through its public API: scaling lives only in `ScalingConfig`. A dead worker
restarts the group from the last reported checkpoint (`FailureConfig.max_failures`); a re-run with
the same output resumes the same run. A submitted job's runtime_env carries only the non-secret
settings in `JOB_ENV`: the cluster's pods have the credentials. This is the only module of the
stage that imports Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import ray
import ray.train
import ray.train.torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from kiln.components.common.config import Config, from_dict
from kiln.components.common.errors import UserError
from kiln.components.common.progress import LOG_FORMAT
from kiln.components.pretrain import checkpoint as ckpt
from kiln.components.pretrain import checkpoint_store
from kiln.components.pretrain.placement import local_param_count
from kiln.components.pretrain.runtime import Runtime
from kiln.components.pretrain.train import make_trainer

log = logging.getLogger("kiln.ray")
RUN_NAME = checkpoint_store.RAY_RUN_NAME
# The only settings a Ray job gets from the submitter's environment; none is secret. Credentials
# reach the Ray pods from the data-connection Secret (manifests/base/raycluster.yaml), never
# through the job's runtime_env, which the dashboard shows to anyone who can list jobs.
JOB_ENV = (
    "AWS_S3_ENDPOINT",
    "AWS_ENDPOINT_URL",
    "AWS_S3_BUCKET",
    "AWS_DEFAULT_REGION",
    "MLFLOW_TRACKING_URI",
    "KILN_S3_LOCAL_ROOT",
)


@dataclass
class RayRuntime(Runtime):
    """A Ray Train worker: checkpoints are reported to Ray, which persists them to storage.

    It resumes from Ray's latest checkpoint, or from a newer one that another launcher (a
    TrainJob, a plain process) left in `resume_roots` (see checkpoint_store).
    """

    resume_roots: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def restore(self) -> Iterator[Path | None]:
        checkpoint = ray.train.get_checkpoint()
        other = checkpoint_store.newest(self.resume_roots) if self.resume else None
        if other is not None and other.step > _ray_step(checkpoint):
            log.info("resuming from %s (step %d), newer than Ray's", other.uri, other.step)
            with checkpoint_store.opened(other) as directory:
                yield directory
            return
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


def _ray_step(checkpoint: Checkpoint | None) -> float:
    """The step of Ray's checkpoint (`step_N`), -1 without one; unreadable: trust Ray's."""
    if checkpoint is None:
        return -1
    name = Path(checkpoint.path).name
    return int(name[5:]) if name.startswith("step_") and name[5:].isdigit() else float("inf")


def log_with_levels() -> None:
    """Kiln's records on a Ray Train worker carry their level, as in a plain process.

    Ray Train gives a worker's root logger its own handlers, which print the message alone (so
    `logging.basicConfig` does nothing there): a warning would read like progress, and `kiln
    run`, which shows the user every WARNING line, would keep it in its log file only. The
    `kiln` loggers get one stderr handler of their own (Ray forwards the worker's stderr to the
    driver and its session logs) and stop propagating, so nothing is printed twice.
    """
    kiln = logging.getLogger("kiln")
    if not kiln.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        kiln.addHandler(handler)
    kiln.setLevel(logging.INFO)
    kiln.propagate = False


def train_loop_per_worker(config: dict) -> None:
    """Entry point on every Ray Train worker."""
    log_with_levels()
    ctx = ray.train.get_context()
    cfg = from_dict(config["cfg"])
    runtime = RayRuntime(
        output_dir=Path(config["output_dir"]),
        resume=config.get("resume", True),
        resume_roots=checkpoint_store.resume_roots(
            cfg.dist.storage_path, config["output_dir"], ray=False
        ),
        rank=ctx.get_world_rank(),
        world_size=ctx.get_world_size(),
        local_rank=ctx.get_local_rank(),
        device=ray.train.torch.get_device(),
    )
    trainer = make_trainer(cfg, config["tokens_dir"], runtime)
    # Where each worker landed and what it holds: for debugging placement and sharding.
    log.info(
        "worker rank %d on node %s (pid %d, %s, %s, %d local parameters)",
        runtime.rank,
        ray.util.get_node_ip_address(),
        os.getpid(),
        runtime.device,
        trainer.cfg.dist.strategy if runtime.world_size > 1 else "single",
        local_param_count(trainer.model),
    )
    trainer.fit()


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


def ensure_ray(address: str = "") -> bool:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a private local one.

    Returns:
        Whether this call started the cluster (so it runs on this machine, for this process).
    """
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS", "")
    if address and address != "local":
        ray.init(address=address, log_to_driver=True)
        return False
    if sys.platform == "linux":
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # local workers talk over loopback
    if stale := stale_ray_address_note():
        log.warning(
            "%s names %s, where no Ray runs any more (a `ray start` that was not stopped): "
            "Ray Train waits ~12 s at the end of each run on it; delete it (`ray stop` does, "
            "and stops every Ray on this machine)",
            *stale,
        )
    # address="local": always a fresh private cluster, never one a stale `ray start` left behind.
    ray.init(address="local", include_dashboard=False, log_to_driver=True)
    return True


def stale_ray_address_note(note: Path | None = None) -> tuple[Path, str] | None:
    """`ray start`'s note of its cluster's address (`ray_current_cluster` in Ray's temp dir) and
    that address, when nothing listens there any more: a cluster that was killed, not stopped.

    Ray's address auto-detection still reads it, so Ray Train's placement-group cleaner (a part
    of every run) queries a dead address and each run's shutdown waits for its ~12 s timeout.
    """
    if note is None:
        base = os.environ.get("RAY_TMPDIR") or (  # where Ray puts it
            os.environ.get("TMPDIR") if sys.platform == "linux" else None
        )
        unix = sys.platform in ("linux", "darwin")
        note = Path(base or ("/tmp" if unix else tempfile.gettempdir())) / "ray/ray_current_cluster"
    try:
        address = note.read_text().strip()
    except OSError:
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return None
    except OSError:
        return note, address


def cpus_per_worker(cfg: Config, own_cluster: bool) -> int:
    """`dist.cpus_per_worker`, or when 0: on a cluster this process started, its CPUs split
    evenly among the workers (so one worker trains on the whole machine, as a plain process
    does); on a cluster it joined, 1."""
    if cfg.dist.cpus_per_worker or not own_cluster:
        return cfg.dist.cpus_per_worker or 1
    nodes = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]]
    per_node = -(-max(1, cfg.dist.workers) // max(1, len(nodes)))  # workers per node, rounded up
    return max(1, int(min(nodes, default=1)) // per_node)


def _worker_cause(error: BaseException) -> Exception | None:
    """The error a worker raised, when it is one the user can fix (a ValueError such as a
    checkpoint of another model shape, a missing file, a damaged shard), so the CLI prints its
    one-line message instead of Ray's report with every worker's traceback; else None."""
    failures = getattr(error, "worker_failures", None)  # ray.train.WorkerGroupError
    if not isinstance(error, ray.train.WorkerGroupError) or not failures:
        return None
    cause = failures[min(failures)]
    cause = getattr(cause, "cause", None) or cause  # a RayTaskError wraps what the worker raised
    if isinstance(cause, UserError | ValueError | FileNotFoundError):
        return cause
    return None


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
    own_cluster = ensure_ray(cfg.dist.ray_address)
    env = (
        {"GLOO_SOCKET_IFNAME": os.environ["GLOO_SOCKET_IFNAME"]}
        if "GLOO_SOCKET_IFNAME" in os.environ
        else {}
    )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "cfg": cfg.to_dict(),
            "tokens_dir": tokens,
            "output_dir": str(output_dir),
            "resume": resume,
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
    try:
        result = trainer.fit()
        if result.error:
            raise result.error
    except ray.train.TrainingFailedError as e:
        cause = _worker_cause(e)
        if cause is None:
            raise
        raise cause from None
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
def job_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The `JOB_ENV` settings set in `environ` (default os.environ), for a job's runtime_env.

    A URL with user info (`https://user:pass@host`) is left out: it may carry a credential.
    """
    environ = os.environ if environ is None else environ
    return {
        k: environ[k] for k in JOB_ENV if environ.get(k) and "@" not in urlsplit(environ[k]).netloc
    }


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
    forwarded = job_env()
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
