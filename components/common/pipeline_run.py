"""What every pipeline step shares: the resolved config (as JSON) and the one MLflow run.

The pipeline's first step resolves the config once from its parameters and opens the MLflow run;
every later step gets both as plain string parameters:

    config_json, run_id, *_ = prepare_run("tiny", '["train.max_steps=50"]', model_name="m")
    cfg = step_config(config_json)                 # in a later step
    tracker = step_tracker(cfg, run_id)            # joins that run (NullTracker when off)
    finish_run("tiny", overrides, pipeline_run_id=..., state="FAILED")  # the exit handler

Pipeline parameters win over the preset and overrides for the fields they name (model name,
S3 bucket, MLflow URI, workers, GPUs, Ray address); empty/negative parameters keep the config's.
No kfp here: the components call these functions, tests call them directly.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, NamedTuple

from kiln.components.common.config import Config, from_dict, load_config, validate
from kiln.components.common.tracking import (
    Tracker,
    close_pipeline_run,
    find_pipeline_run,
    make_tracker,
    start_pipeline_run,
)

log = logging.getLogger("kiln.pipeline")

WORKDIR_ENV = "KILN_WORKDIR"


def workdir() -> str:
    """Where steps keep local state (the default MLflow store): $KILN_WORKDIR or ./kiln-work."""
    return os.environ.get(WORKDIR_ENV, "kiln-work")


def parse_overrides(overrides: str) -> list[str]:
    """Overrides as a JSON list (`'["train.max_steps=50"]'`) or newline/semicolon separated text."""
    text = overrides.strip()
    if not text:
        return []
    if text.startswith("["):
        items = json.loads(text)
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ValueError(
                f"overrides: expected a JSON list of 'section.key=value' strings, got {text!r}"
            )
        return items
    return [i.strip() for i in text.replace(";", "\n").splitlines() if i.strip()]


def resolve_config(
    preset: str,
    overrides: str = "",
    *,
    model_name: str = "",
    s3_bucket: str = "",
    mlflow_uri: str = "",
    workers: int = -1,
    gpus_per_worker: int = -1,
    ray_address: str = "",
) -> Config:
    """The run's Config: preset, then overrides, then the pipeline parameters that are set.

    Args:
        preset: a preset name (`tiny`, `small`, ...).
        overrides: `section.key=value` items, see `parse_overrides`.
        model_name: registered model name (publish.model_name and tracking.model_name).
        s3_bucket: artifacts go to s3://BUCKET/kiln (storage.root) when given.
        mlflow_uri: tracking.uri when given.
        workers: dist.workers when >= 0 (0 = train in the step's own process).
        gpus_per_worker: > 0 sets dist.use_gpu; 0 forces CPU; < 0 keeps the config's.
        ray_address: dist.ray_address when given.
    """
    cfg = load_config(preset or None, None, parse_overrides(overrides))
    if model_name:
        cfg.tracking.model_name = model_name
        if hasattr(cfg, "publish"):
            cfg.publish.model_name = model_name
    if s3_bucket:
        cfg.storage.root = f"s3://{s3_bucket.removeprefix('s3://').strip('/')}/kiln"
    if mlflow_uri:
        cfg.tracking.uri = mlflow_uri
    if workers >= 0:
        cfg.dist.workers = workers
    if gpus_per_worker >= 0:
        cfg.dist.use_gpu = gpus_per_worker > 0
    if ray_address:
        cfg.dist.ray_address = ray_address
    validate(cfg)
    return cfg


class PreparedRun(NamedTuple):
    config_json: str  # the whole resolved config
    run_id: str  # the MLflow run ('' when tracking is not MLflow)
    ingest_config: str  # only the `ingest` section: the cache key of the ingest step
    tokenize_config: str  # only the `tokenizer` section: the cache key of the tokenize step


def section_json(cfg: Config, *sections: str) -> str:
    """A config JSON holding only `sections` (the rest stays at defaults when read back).

    The data steps get this instead of the whole config, so KFP's cache (keyed on a step's
    inputs) still hits when only training, evaluation or publishing settings change.
    """
    full = cfg.to_dict()
    return json.dumps({name: full[name] for name in sections}, indent=2, sort_keys=True)


def prepare_run(
    preset: str,
    overrides: str = "",
    *,
    run_id: str = "",
    pipeline_run_id: str = "",
    **params: Any,
) -> PreparedRun:
    """Resolve the config and open (or join) the pipeline's MLflow run; log the config as params.

    Args:
        preset, overrides, **params: see `resolve_config`.
        run_id: an MLflow run created by the caller (e.g. `kiln run`), joined instead of a new one.
        pipeline_run_id: the KFP run id, recorded as the `pipeline_run_id` tag.

    Returns:
        The resolved config as JSON, the MLflow run id, and the data steps' config sections.
    """
    cfg = resolve_config(preset, overrides, **params)
    tags = {"pipeline_run_id": pipeline_run_id, "kiln.preset": preset or "tiny"}
    if not run_id:
        run_id = start_pipeline_run(cfg, workdir(), run_name=pipeline_run_id or None, tags=tags)
    tracker = step_tracker(cfg, run_id)
    if run_id:
        tracker.set_tags(tags)
    tracker.log_params(cfg.to_dict())
    return PreparedRun(
        cfg.to_json(), run_id, section_json(cfg, "ingest"), section_json(cfg, "tokenizer")
    )


# KFP's final pipeline states -> MLflow run statuses
RUN_STATUS = {"SUCCEEDED": "FINISHED", "CANCELED": "KILLED", "CANCELLED": "KILLED"}


def finish_run(
    preset: str,
    overrides: str,
    *,
    mlflow_uri: str = "",
    run_id: str = "",
    pipeline_run_id: str = "",
    state: str = "FAILED",
    error: str = "",
) -> str:
    """End the pipeline's MLflow run however the pipeline ended (the pipeline's exit handler).

    The run is `run_id`, else the one `prepare_run` tagged with `pipeline_run_id`. A pipeline that
    failed or was cancelled before publish leaves its run RUNNING: it becomes FAILED / KILLED, with
    the error as the `pipeline_error` tag. Returns the run's final status ('' when there is no run).
    """
    cfg = resolve_config(preset, overrides, mlflow_uri=mlflow_uri)
    run_id = run_id or find_pipeline_run(cfg, pipeline_run_id, workdir())
    status = RUN_STATUS.get(state.upper(), "FAILED")
    final = close_pipeline_run(
        cfg, run_id, status, error if status != "FINISHED" else "", workdir()
    )
    if run_id:
        log.info("pipeline %s ended %s: MLflow run %s is %s", pipeline_run_id, state, run_id, final)
    return final


def step_config(config_json: str) -> Config:
    """The Config a step received as JSON (from `prepare_run`; a `section_json` reads back with
    the other sections at their defaults)."""
    try:
        data = json.loads(config_json)
    except json.JSONDecodeError as e:
        raise ValueError(f"config_json: not valid JSON ({e}); pass prepare_run's output") from None
    cfg = from_dict(data)
    validate(cfg)
    return cfg


def step_tracker(cfg: Config, run_id: str) -> Tracker:
    """A tracker that writes to the pipeline's run `run_id` (no-op when tracking is off)."""
    if cfg.tracking.backend == "mlflow" and not run_id:
        return make_tracker(cfg, rank=1)  # no run to join: don't open a stray one per step
    return make_tracker(cfg, workdir=workdir(), run_id=run_id or None)
