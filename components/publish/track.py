"""Publish steps 2 and 3: the MLflow run (metrics, params, lineage tags, artifacts) and the
registered version with its `candidate` / `champion` aliases.

MLflow is reached only through `kiln.components.common.tracking` and `kiln.components.common.registry`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.components.common.config import Config
from kiln.components.common.registry import ModelRegistry
from kiln.components.common.tracking import Tracker, make_tracker

# report/ file → MLflow artifact folder
ARTIFACT_DIRS = {
    "eval.json": "eval",
    "samples.json": "eval",
    "config.json": "config",
    "loss_curve.png": "plots",
    "checkpoints.json": "publish",
    "lineage.json": "publish",
}


def open_run(
    cfg: Config, run_id: str | None, training_run_id: str, name: str, workdir: str
) -> Tracker:
    """The tracker for this publish: `run_id`'s run; without one, the run of a version already
    registered for `training_run_id` (a re-publish), else a new run."""
    if cfg.tracking.backend == "mlflow" and not run_id:
        existing = ModelRegistry(cfg.tracking.uri, workdir).find_by_training_run(
            name, training_run_id
        )
        run_id = existing.run_id if existing is not None and existing.run_id else None
    return make_tracker(cfg, workdir=workdir, run_name=f"publish {name}", run_id=run_id)


def log_to_run(
    cfg: Config,
    report: dict[str, Any],
    tags: dict[str, str],
    report_dir: Path,
    run_id: str | None,
    training_run_id: str,
    name: str,
    workdir: str,
) -> Tracker:
    """Log eval metrics (`eval/…`), the resolved config as params, lineage tags and the report
    files as artifacts; returns the tracker (the caller finishes it)."""
    tracker = open_run(cfg, run_id, training_run_id, name, workdir)
    try:
        tracker.log_params(cfg.to_dict())
        tracker.log_metrics({f"eval/{k}": v for k, v in report.get("metrics", {}).items()})
        tracker.set_tags({**tags, "training_run_id": training_run_id})
        for path in sorted(report_dir.iterdir()):
            tracker.log_artifact(path, ARTIFACT_DIRS.get(path.name, "publish"))
    except Exception:
        tracker.finish("FAILED")
        raise
    return tracker


def _description(cfg: Config, report: dict[str, Any], tags: dict[str, str]) -> str:
    if cfg.publish.description:
        return cfg.publish.description
    return (
        f"val_loss {report['val_loss']:.4f}, perplexity {report['perplexity']:.2f}, "
        f"bits/byte {report['bits_per_byte']:.4f} on val set {tags['val_set_digest'][:12]}; "
        f"eval gate {tags['eval_gate']}; {tags['code_version']}"
    )


def register_version(
    cfg: Config,
    report: dict[str, Any],
    tags: dict[str, str],
    name: str,
    training_run_id: str,
    tracker: Tracker,
    workdir: str = "kiln-work",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Register `tags['model_uri']` as a version of `name` (alias candidate; idempotent by
    `training_run_id`) and move `champion` when both gates pass.

    Returns:
        ({"name", "version", "aliases", "created", "source"}, {"moved": bool, "reason": str})
    """
    reg = ModelRegistry(cfg.tracking.uri, workdir)
    metrics = {k: float(v) for k, v in report.get("metrics", {}).items()}
    registered = reg.register(
        name,
        tags["model_uri"],
        training_run_id=training_run_id,
        mlflow_run_id=tracker.run_id or None,
        description=_description(cfg, report, tags),
        tags=tags,
        metrics=metrics,
    )
    if not report["gate"]["passed"]:
        failed = report["gate"].get("failed") or report["gate"].get("reasons", [])
        champion = {"moved": False, "reason": "eval gate failed: " + "; ".join(failed)}
    elif not cfg.publish.promote:
        champion = {"moved": False, "reason": "publish.promote is off"}
    else:
        gate = reg.promote_if_better(name, registered.version, cfg.tracking.gate_metric)
        champion = {"moved": gate.passed, "reason": gate.reason}
    info = reg.show(name, version=registered.version)
    tracker.set_tags(
        {
            "registered_model": name,
            "registered_version": registered.version,
            "champion_moved": str(champion["moved"]).lower(),
            "champion_reason": champion["reason"],
        }
    )
    out = {
        "name": name,
        "version": registered.version,
        "aliases": info["aliases"],
        "created": registered.created,
        "source": registered.source,
    }
    return out, champion
