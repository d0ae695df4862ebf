"""The pretrain step of the pipeline: token shards → checkpoints + Hugging Face model, tracked.

    summary = pretrain_step("out/tokens", "out/train", config_json, run_id)

Where training runs follows `cfg.dist` (set from the pipeline's parameters):

- `ray_address` http(s)://HEAD:8265: submitted to that Ray cluster with the Jobs API
  (`ray_launch.submit_job`); the step streams the job's logs and fails when the job fails.
  The cluster must see the token shards and the output: with $KILN_SHARED_DIR set (a volume
  mounted in this pod and in the Ray pods at the same path, `kiln compile --shared-pvc`), they
  are staged under KILN_SHARED_DIR/kiln-jobs/<run id>/ and the result copied back; without it
  the paths are passed as they are (same machine, or a shared filesystem). With real S3
  configured (a bucket and an endpoint, or AWS) and no shared volume, the shards are uploaded
  to S3 (verified), workers read them from there, checkpoints go to S3 (`dist.storage_path`),
  a re-run resumes from the latest S3 checkpoint, and the final one is fetched back.
- `launcher` trainjob: a Kubeflow Trainer v2 TrainJob of `workers` nodes on the cluster of the
  current Kubernetes config (`trainjob_launch.train_as_trainjob`: S3 or a shared volume as
  above); the step follows its node-0 log and fails when it fails.
- `workers` > 0: Ray Train with that many workers, on a local Ray (or `ray://`/`auto`).
- `workers` == 0: one plain process, this one.

A re-run of the step with the same output directory resumes from its latest checkpoint. The
pipeline's MLflow run gets the training metrics (`train/loss`, `train/lr`, `train/grad_norm`,
`train/tokens_per_sec`, `train/mfu` on GPUs, `train/skipped_steps`, `val/loss`,
`val/bits_per_byte`): live from a plain process, else replayed from train_log.jsonl when the
training ends; MLflow's system metrics (`system/…`) while training runs on this machine; the
training curve (PNG: loss, validation points, learning rate) and the resolved config.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, NamedTuple

from kiln.components.common.config import with_changes
from kiln.components.common.pipeline_run import step_config, step_tracker
from kiln.components.common.tracking import Tracker
from kiln.components.pretrain import checkpoint as ckpt
from kiln.components.pretrain.train_log import (
    TRAIN_LOG,
    plot_curve,
    read_records,
    read_train_log,
    step_metrics,
)

log = logging.getLogger("kiln.pretrain")
SHARED_DIR_ENV = "KILN_SHARED_DIR"


def _has_run(out: Path) -> bool:
    return ckpt.latest_checkpoint(out / "checkpoints") is not None or (out / "ray").exists()


def _submit(cfg, tokens: Path, out: Path, address: str, run_key: str) -> str | None:
    """Train as a Ray job; stage through $KILN_SHARED_DIR when set (see module docstring)."""
    from kiln.components.pretrain.ray_launch import submit_job

    cfg = with_changes(cfg, {"dist.ray_address": ""})  # the job runs on the cluster it was sent to
    shared = os.environ.get(SHARED_DIR_ENV, "")
    s3_root = _cluster_s3_root(cfg)
    if s3_root and not shared:
        return _submit_via_s3(cfg, tokens, out, address, s3_root, run_key)
    if not shared:
        log.warning("no %s: the Ray cluster must see %s and %s", SHARED_DIR_ENV, tokens, out)
        submit_job(cfg, str(tokens), str(out), address, resume=_has_run(out))
        latest = ckpt.latest_checkpoint(out / "checkpoints")
        return str(latest) if latest else None
    job_tokens, job_out = stage_on_shared(shared, run_name(run_key, out), tokens)
    # A retried step finds the job's checkpoints on the shared volume and resumes from them.
    submit_job(cfg, str(job_tokens), str(job_out), address, resume=_has_run(job_out))
    shutil.copytree(job_out, out, dirs_exist_ok=True)
    latest = ckpt.latest_checkpoint(out / "checkpoints")
    return str(latest) if latest else None


def run_name(run_key: str, out: Path) -> str:
    """The name a run's staged files go under: its MLflow run id, else the step's directory."""
    return run_key or out.resolve().parent.name


def stage_on_shared(shared: str, run: str, tokens: Path) -> tuple[Path, Path]:
    """Copy the token shards to SHARED/kiln-jobs/RUN/tokens; returns (tokens, job output)."""
    job_dir = Path(shared) / "kiln-jobs" / run
    shutil.copytree(tokens, job_dir / "tokens", dirs_exist_ok=True)
    return job_dir / "tokens", job_dir / "train"


class StagedOnS3(NamedTuple):
    cfg: Any  # the config with dist.storage_path = ROOT/runs/RUN/train/ray (checkpoints)
    tokens: str  # ROOT/runs/RUN/train/tokens
    scratch: str  # the job's local output: logs only, the results live in S3


def stage_on_s3(cfg, tokens: Path, root: str, run: str) -> StagedOnS3:
    """Upload the token shards (verified, once per run) for a cluster job to read, and point its
    checkpoints to S3 beside them."""
    from kiln.components.common import storage

    prefix = storage.join(root, "runs", run, "train")
    tokens_uri = storage.join(prefix, "tokens")
    if not storage.is_committed(tokens_uri):
        storage.upload_dir(str(tokens), tokens_uri)  # verified; the cluster downloads it verified
    cfg = with_changes(cfg, {"dist.storage_path": storage.join(prefix, "ray")})
    return StagedOnS3(cfg, tokens_uri, f"/tmp/kiln-jobs/{run}")


def _cluster_s3_root(cfg) -> str | None:
    """The s3:// prefix a Ray cluster can read, when real S3 is configured (not the local stand-in)."""
    from kiln.components.common import storage

    s = storage.settings_from_config(cfg.storage)
    if not s.bucket or (s.local_root and not s.endpoint):
        return None
    return cfg.storage.root if storage.is_s3(cfg.storage.root) else f"s3://{s.bucket}/kiln"


def _submit_via_s3(
    cfg, tokens: Path, out: Path, address: str, root: str, run_key: str
) -> str | None:
    """Train as a Ray job whose workers read the token shards from S3 and write checkpoints to
    S3; a re-run of the step resumes from the latest S3 checkpoint of the same run."""
    from kiln.components.pretrain.ray_launch import fetch_latest_checkpoint, run_exists, submit_job

    cfg, tokens_uri, scratch = stage_on_s3(cfg, tokens, root, run_name(run_key, out))
    resume = run_exists(cfg.dist.storage_path) or _has_checkpoints(cfg.dist.storage_path)
    submit_job(cfg, tokens_uri, scratch, address, resume=resume)
    final = fetch_latest_checkpoint(cfg.dist.storage_path, out)
    if final is not None and (final / TRAIN_LOG).exists():
        shutil.copyfile(final / TRAIN_LOG, out / TRAIN_LOG)
    return str(final) if final else None


def _has_checkpoints(storage_path: str) -> bool:
    """Whether a TrainJob left checkpoints beside the Ray run in `storage_path` (to resume)."""
    from kiln.components.pretrain import checkpoint_store

    return checkpoint_store.newest([checkpoint_store.own_root(storage_path, "")]) is not None


def _trains_here(cfg) -> bool:
    """Whether training runs on this machine (a plain process or a private local Ray)."""
    if cfg.dist.launcher == "trainjob" or cfg.dist.ray_address.startswith(("http://", "https://")):
        return False
    if cfg.dist.workers == 0:
        return True
    return (cfg.dist.ray_address or os.environ.get("RAY_ADDRESS", "local")) == "local"


def _train(cfg, tokens: Path, out: Path, tracker: Tracker, run_key: str) -> tuple[str | None, bool]:
    """Run training where `cfg.dist` says; returns (final checkpoint, metrics already tracked)."""
    resume = _has_run(out)
    address = cfg.dist.ray_address
    if cfg.dist.launcher == "trainjob":
        from kiln.components.pretrain.trainjob_launch import train_as_trainjob

        shared = os.environ.get(SHARED_DIR_ENV, "")
        return train_as_trainjob(cfg, tokens, out, run_key, _cluster_s3_root(cfg), shared), False
    if address.startswith(("http://", "https://")):
        return _submit(cfg, tokens, out, address, run_key), False
    if cfg.dist.workers > 0:
        from kiln.components.pretrain.ray_launch import copy_final_checkpoint, launch

        result = launch(cfg, tokens, out, resume=resume)
        final = copy_final_checkpoint(result, out)
        return (str(final) if final else None), False
    from kiln.components.pretrain import pretrain

    return pretrain(cfg, tokens, out, resume=resume, tracker=tracker).checkpoint, True


def _log_curve(out: Path, tracker: Tracker, replay: bool) -> None:
    """The run's metrics from train_log.jsonl into the tracker (when the trainer could not log
    them live: Ray workers) and the training curve PNG."""
    records = read_records(out / TRAIN_LOG)
    if not records:
        return
    if replay:
        tracker.log_history((r["step"], step_metrics(r)) for r in records)
    if plot_curve(out / TRAIN_LOG, out / "loss_curve.png") is not None:
        tracker.log_artifact(out / "loss_curve.png", "train")


def train_and_export(
    cfg, tokens_dir: str | Path, output_dir: str | Path, run_id: str = "", **export: Any
) -> dict[str, Any]:
    """Train where `cfg.dist` says, export the final checkpoint to `output_dir/model` (with
    `export`'s keywords: a chat template), track it all; returns the summary."""
    from kiln.components.pretrain.export import export_checkpoint

    tokens, out = Path(tokens_dir), Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.to_json())
    tracker = step_tracker(cfg, run_id)
    with tracker.system_metrics() if _trains_here(cfg) else contextlib.nullcontext():
        final, tracked = _train(cfg, tokens, out, tracker, run_id)
    if final is None:
        raise RuntimeError(f"training wrote no checkpoint under {out}; see the log above")
    tokenizer = tokens / "tokenizer.json"
    model_dir = export_checkpoint(
        final, out / "model", tokenizer if tokenizer.exists() else None, **export
    )
    _log_curve(out, tracker, replay=not tracked)
    tracker.log_artifact(out / "config.json", "train")
    losses = read_train_log(out)
    summary = {
        "checkpoint": str(final),
        "model_dir": str(model_dir),
        "steps": max(losses) if losses else 0,
        "final_loss": losses[max(losses)] if losses else None,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("training: %s (train log %s)", summary, out / TRAIN_LOG)
    return summary


def pretrain_step(
    tokens_dir: str, output_dir: str, config_json: str, run_id: str = ""
) -> dict[str, Any]:
    """Train on the token shards, export the final model to `output_dir/model`, track it all.

    Args:
        tokens_dir: the tokenize step's output (manifest.json, shards, tokenizer.json).
        output_dir: run directory: config.json, train_log.jsonl, checkpoints/, model/.
        config_json: the resolved config (`prepare_run`).
        run_id: the pipeline's MLflow run ('' = not tracked).

    Returns:
        The final step, checkpoint and model directory, and the last logged loss.
    """
    return train_and_export(step_config(config_json), tokens_dir, output_dir, run_id)
