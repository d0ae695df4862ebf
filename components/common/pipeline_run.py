"""What every pipeline step shares: the resolved config (as JSON) and the one MLflow run.

The pipeline's first step resolves the config once from its run parameters (`RunParams`) and
opens the MLflow run; every later step gets both as plain string parameters:

    config_json, run_id, *_ = prepare_run(RunParams(overrides=["train.max_steps=50"]))
    cfg = step_config(config_json)                 # in a later step
    tracker = step_tracker(cfg, run_id)            # joins that run (NullTracker when off)
    finish_run(params, pipeline_run_id=..., state="FAILED")   # the exit handler

Run parameters win over the preset and overrides for the fields they name (model name, S3
bucket, MLflow URI, workers, GPUs, Ray address); see `RunParams.changes`.
No kfp here: the components call these functions, tests call them directly.
"""

from __future__ import annotations

import json
import logging
import os
from typing import NamedTuple

from kiln.components.common.config import Config, RunParams, from_dict, parse_overrides
from kiln.components.common.tracking import (
    Tracker,
    close_pipeline_run,
    find_pipeline_run,
    make_tracker,
    start_pipeline_run,
)

__all__ = [
    "PreparedRun",
    "RunParams",
    "finish_run",
    "parse_overrides",
    "prepare_run",
    "section_json",
    "step_config",
    "step_tracker",
    "workdir",
]

log = logging.getLogger("kiln.pipeline")

WORKDIR_ENV = "KILN_WORKDIR"


def workdir() -> str:
    """Where steps keep local state (the default MLflow store): $KILN_WORKDIR or ./kiln-work."""
    return os.environ.get(WORKDIR_ENV, "kiln-work")


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


def prepare_run(params: RunParams, *, pipeline_run_id: str = "") -> PreparedRun:
    """Resolve the config and open (or join) the pipeline's MLflow run; log the config as params.

    Args:
        params: the run parameters; `params.run_id` (an MLflow run created by the caller, e.g.
            `kiln run`) is joined instead of opening a new one.
        pipeline_run_id: the KFP run id, recorded as the `pipeline_run_id` tag.

    Returns:
        The resolved config as JSON, the MLflow run id, and the data steps' config sections.
    """
    cfg = params.resolve()
    tags = {"pipeline_run_id": pipeline_run_id, "kiln.preset": params.preset or "tiny"}
    run_id = params.run_id
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
    params: RunParams, *, pipeline_run_id: str = "", state: str = "FAILED", error: str = ""
) -> str:
    """End the pipeline's MLflow run however the pipeline ended (the pipeline's exit handler).

    The run is `params.run_id`, else the one `prepare_run` tagged with `pipeline_run_id`. A
    pipeline that failed or was cancelled before publish leaves its run RUNNING: it becomes
    FAILED / KILLED, with the error as the `pipeline_error` tag. Returns the run's final status
    ('' when there is no run).
    """
    cfg = params.resolve()
    run_id = params.run_id or find_pipeline_run(cfg, pipeline_run_id, workdir())
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
    return from_dict(data)


def step_tracker(cfg: Config, run_id: str) -> Tracker:
    """A tracker that writes to the pipeline's run `run_id` (no-op when tracking is off)."""
    if cfg.tracking.backend == "mlflow" and not run_id:
        return make_tracker(cfg, rank=1)  # no run to join: don't open a stray one per step
    return make_tracker(cfg, workdir=workdir(), run_id=run_id or None)
