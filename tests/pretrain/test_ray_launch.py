"""Ray Train: 2 workers resume bit-exactly, survive a killed worker, span 2 nodes, and run as a job.

Each test talks to a real local Ray cluster (127.0.0.3 and 127.0.0.2 for the 2-node case). Where
workers ran and what they held is read back through Ray's public state API (actors, their logs).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from kiln.components.pretrain.ray_launch import copy_final_checkpoint, launch, submit_job  # noqa: E402
from kiln.components.pretrain.runtime import read_train_log  # noqa: E402

pytestmark = pytest.mark.ray
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")


@pytest.fixture(scope="module")
def local_ray():
    # The dashboard serves Ray's state API (`worker_lines`); it binds to 127.0.0.1 by default.
    ray.init(address="local", num_cpus=2, include_dashboard=True, log_to_driver=False)
    yield
    ray.shutdown()


WORKER_LINE = re.compile(  # with its level, which `kiln run` needs to show warnings
    r"INFO kiln\.ray: worker rank (?P<rank>\d+) on node (?P<node>\S+) \(pid \d+, (?P<device>[^,]+), "
    r"(?P<strategy>\w+), (?P<params>\d+) local parameters\)"
)


def cluster_address() -> str:
    """The GCS of the cluster this driver joined; Ray's auto-detection could pick another one
    still running on the machine."""
    return ray.get_runtime_context().gcs_address


def train_worker_ids() -> set[str]:
    """Ids of every Ray Train worker actor the cluster has run, alive or dead."""
    from ray.util.state import list_actors

    actors = list_actors(
        address=cluster_address(), filters=[("class_name", "=", "RayTrainWorker")], limit=10_000
    )
    return {a.actor_id for a in actors}


def worker_lines(before: set[str]) -> list[dict]:
    """The "worker rank" log line of each Ray Train worker started since `before`, by rank."""
    from ray.util.state import get_log

    found = []
    for actor_id in train_worker_ids() - before:
        text = "".join(get_log(address=cluster_address(), actor_id=actor_id, suffix="err"))
        found += [m.groupdict() for m in WORKER_LINE.finditer(text)]
    return sorted(found, key=lambda w: int(w["rank"]))


def two_worker_cfg(cfg, ckpt_every=30):
    # Few checkpoints: Ray Train takes each report from a worker at its ~2 s poll, so a report
    # every few milliseconds of training would pace the run at the poll.
    cfg.dist.workers, cfg.dist.max_failures = 2, 1
    cfg.train.max_steps, cfg.train.ckpt_every, cfg.train.keep_checkpoints = 60, ckpt_every, 10
    cfg.train.eval_every = 30
    return cfg


def final_weights(result, out: Path):
    final = copy_final_checkpoint(result, out)
    return load_file(final / "model.safetensors")


@pytest.fixture(scope="module")
def straight(local_ray, tokens_dir, tmp_path_factory):
    """An uninterrupted 2-worker run: the reference for resume and failure recovery."""

    out = tmp_path_factory.mktemp("straight")
    cfg = two_worker_cfg(_tiny())
    result = launch(cfg, tokens_dir, out)
    return read_train_log(out), final_weights(result, out)


def _tiny():
    from kiln.components.common.config import load_config

    return load_config(
        "tiny",
        overrides=[
            "model.dim=32", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2",
            "data.seq_len=32", "train.micro_batch_size=4", "train.eval_batches=2",
            "train.sample_tokens=8", "optim.warmup_steps=5", "train.log_every=10",
        ],
    )  # fmt: skip


def test_two_workers_resume_bit_identical(straight, tokens_dir, tmp_path):
    losses, weights = straight
    assert sorted(losses) == list(range(1, 61))
    cfg = two_worker_cfg(_tiny())
    cfg.train.stop_after_steps = 30
    launch(cfg, tokens_dir, tmp_path)
    with pytest.raises(ValueError, match="pass --resume"):
        launch(cfg, tokens_dir, tmp_path)
    cfg.train.stop_after_steps = 0
    result = launch(cfg, tokens_dir, tmp_path, resume=True)
    assert read_train_log(tmp_path) == losses
    resumed = final_weights(result, tmp_path)
    assert all(torch.equal(resumed[k], weights[k]) for k in weights)


def _train_workers() -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "RayTrainWorker" in cmd or "RayTrainWorker" in (p.name() or ""):
            found.append(p)
    return found


def test_killed_worker_restarts_from_checkpoint_with_same_result(straight, tokens_dir, tmp_path):
    losses, weights = straight
    cfg = two_worker_cfg(_tiny(), ckpt_every=10)  # paced by its reports: killed mid-run
    outcome = {}
    thread = threading.Thread(
        target=lambda: outcome.update(result=launch(cfg, tokens_dir, tmp_path))
    )
    thread.start()
    killed = None
    deadline = time.time() + 240
    while time.time() < deadline and thread.is_alive() and killed is None:
        if (tmp_path / "ray/train/step_10").exists():
            workers = _train_workers()
            if workers:
                killed = workers[-1]
                killed.kill()
        time.sleep(0.02)
    thread.join(timeout=300)
    assert killed is not None, "no training worker was found to kill"
    assert "result" in outcome, "training did not finish after the worker was killed"
    log = [
        json.loads(line)["step"] for line in (tmp_path / "train_log.jsonl").read_text().splitlines()
    ]
    # The restarted group cut the log back to its checkpoint: every step once, in order.
    assert log == list(range(1, len(losses) + 1))
    assert read_train_log(tmp_path) == losses
    recovered = final_weights(outcome["result"], tmp_path)
    assert all(torch.equal(recovered[k], weights[k]) for k in weights)


def test_fsdp_trains_like_ddp_and_resumes(straight, tokens_dir, tmp_path):
    """FSDP2 (sharded parameters, gradients and optimizer state) follows the DDP run step for step,
    and its full-state checkpoints resume it."""
    ddp_losses, ddp_weights = straight
    cfg = two_worker_cfg(_tiny())
    cfg.dist.strategy = "fsdp"
    cfg.train.stop_after_steps = 30
    launch(cfg, tokens_dir, tmp_path)
    before = train_worker_ids()
    cfg.train.stop_after_steps = 0
    result = launch(cfg, tokens_dir, tmp_path, resume=True)
    held = worker_lines(before)
    total = sum(t.numel() for t in ddp_weights.values())
    assert [(h["rank"], h["strategy"]) for h in held] == [("0", "fsdp"), ("1", "fsdp")]
    params = [int(h["params"]) for h in held]
    assert sum(params) == total  # each rank holds only its shards
    assert all(p < 0.6 * total for p in params)
    losses = read_train_log(tmp_path)
    assert sorted(losses) == sorted(ddp_losses)
    # Same data and init; only the order of floating-point sums in the gradient reductions differs.
    for step, loss in ddp_losses.items():
        assert losses[step] == pytest.approx(loss, rel=1e-4, abs=1e-5), step
    weights = final_weights(result, tmp_path)
    assert weights.keys() == ddp_weights.keys()  # gathered to full, unsharded tensors
    for name, tensor in ddp_weights.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-3, atol=1e-4)


@pytest.fixture
def two_node_cluster():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    # The head goes on 127.0.0.3, not 127.0.0.1: Ray rewrites a 127.0.0.1/localhost bootstrap address
    # to the host's external IP when a driver connects, which a loopback-bound head never listens on.
    cluster = Cluster(
        initialize_head=True,  # with the dashboard, for Ray's state API (`worker_lines`)
        head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.3", "include_dashboard": True},
    )
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.2")
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_workers_land_on_different_nodes(two_node_cluster, tokens_dir, tmp_path):
    cfg = _tiny()
    cfg.dist.workers = 2
    cfg.train.max_steps = 4
    result = launch(cfg, tokens_dir, tmp_path)
    assert result.checkpoint
    placed = worker_lines(set())
    assert [p["rank"] for p in placed] == ["0", "1"]
    assert {p["node"] for p in placed} == {"127.0.0.3", "127.0.0.2"}


def test_jobs_api_submission_streams_logs_and_reports_status(ray_head, tokens_dir, tmp_path):
    import io

    cfg = _tiny()
    cfg.dist.workers, cfg.train.max_steps = 0, 6  # the job's own process trains: fast to start
    logs = io.StringIO()
    job_id = submit_job(
        cfg, str(tokens_dir), str(tmp_path / "run"), ray_head, resume=False, stream=logs
    )
    assert job_id
    assert "step 6/6" in logs.getvalue()
    assert (tmp_path / "run/model/model.safetensors").exists()
    with pytest.raises(RuntimeError, match="FAILED"):
        submit_job(
            cfg, str(tmp_path / "missing"), str(tmp_path / "bad"), ray_head, stream=io.StringIO()
        )


def test_tokens_from_s3_and_checkpoints_to_s3(s3_server, tokens_dir, tmp_path, monkeypatch):
    """Workers read token shards from S3 and Ray Train persists checkpoints to S3 (moto server)."""
    from kiln.components.common import storage
    from kiln.components.pretrain.export import export_checkpoint
    from kiln.components.pretrain.ray_launch import local_checkpoint

    bucket = os.environ["AWS_S3_BUCKET"]
    storage.upload_dir(str(tokens_dir), f"s3://{bucket}/tokens")
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path / "cache"))
    if ray.is_initialized():  # workers of a local cluster inherit the env it was started with
        ray.shutdown()
    cfg = _tiny()
    cfg.dist.workers, cfg.train.max_steps, cfg.train.ckpt_every = 1, 6, 3
    cfg.dist.storage_path = f"s3://{bucket}/ray"
    result = launch(cfg, f"s3://{bucket}/tokens", tmp_path / "run")
    keys = storage.list_files(f"s3://{bucket}/ray/train")
    assert any("/step_6/model.safetensors" in k for k in keys), keys
    assert any("/step_3/" in k for k in keys)
    with local_checkpoint(result) as final:
        model = export_checkpoint(final, tmp_path / "model")
    assert (model / "model.safetensors").exists()
    assert (tmp_path / "cache/tokens").is_dir()  # shards came from S3 through the verified cache
    ray.shutdown()


def test_a_workers_user_error_reaches_the_cli_as_itself():
    """Ray Train 2.60 raises WorkerGroupError from fit() with each rank's exception in
    `worker_failures` (public API); a fixable one comes out as itself, one line, no traceback."""
    from kiln.components.pretrain.ray_launch import _worker_cause

    shape = ValueError("checkpoint in out/ was trained with a different model shape (dim 32 …)")
    error = ray.train.WorkerGroupError(
        "[Rank 0,1 Error Snippet]: Traceback …", {0: shape, 1: shape}
    )
    assert _worker_cause(error) is shape
    crash = ray.train.WorkerGroupError("boom", {0: RuntimeError("CUDA error: illegal address")})
    assert _worker_cause(crash) is None  # a bug keeps Ray's full report
    assert _worker_cause(RuntimeError("not from Ray")) is None
