"""The evaluate step of the pipeline: model + held-out tokens → eval.json, metrics everywhere.

    report = evaluate_step("out/train/model", "out/tokens", "out/eval", config_json, run_id,
                           log_metric=kfp_metrics.log_metric)

`log_metric(name, value)` receives every numeric metric (the KFP component passes its `Metrics`
artifact's `log_metric`, so they show in the pipeline UI); the same metrics go to the MLflow run
with an `eval/` prefix, and eval.json is attached to it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kiln.components.common.pipeline_run import step_config, step_tracker, workdir
from kiln.components.evaluate import EVAL_JSON, evaluate


def evaluate_step(
    model_dir: str,
    tokens_dir: str,
    output_dir: str,
    config_json: str,
    run_id: str = "",
    baseline: str = "",
    log_metric: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """Evaluate the trained model with the run's `eval` config and report its metrics.

    Args:
        model_dir: Hugging Face format model directory (the pretrain step's `model/`).
        tokens_dir: the tokenize step's output (val shards, tokenizer.json).
        output_dir: where eval.json is written.
        config_json: the resolved config (`prepare_run`).
        run_id: the pipeline's MLflow run ('' = not tracked).
        baseline: a model to compare with ('' = none): directory, s3:// or models:/NAME@ALIAS.
        log_metric: called with (name, value) for each numeric metric.

    Returns:
        The eval report (see `kiln.components.evaluate.run`).
    """
    cfg = step_config(config_json)
    report = evaluate(
        model_dir,
        tokens_dir,
        output_dir,
        cfg.eval,
        baseline_model_dir=baseline or None,
        tracking_uri=cfg.tracking.uri,
        workdir=workdir(),
    )
    report_metrics(report, cfg, run_id, Path(output_dir) / EVAL_JSON, log_metric)
    return report


def report_metrics(
    report: dict[str, Any],
    cfg: Any,
    run_id: str,
    eval_json: Path,
    log_metric: Callable[[str, float], None] | None = None,
) -> None:
    """An eval report's metrics (and gate_passed) to `log_metric` (KFP Metrics) and, prefixed
    `eval/` (the names publish uses), to the MLflow run, with eval.json attached."""
    metrics = {k: float(v) for k, v in report["metrics"].items()}
    metrics["gate_passed"] = 1.0 if report["gate"]["passed"] else 0.0
    for name, value in metrics.items():
        if log_metric is not None:
            log_metric(name, value)
    tracker = step_tracker(cfg, run_id)
    tracker.log_metrics({f"eval/{k}": v for k, v in metrics.items()})
    tracker.log_artifact(eval_json, "eval")
