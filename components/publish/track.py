"""Publish steps 2 and 3: the MLflow run (metrics, params, lineage tags, artifacts) and the
registered version with its `candidate` / `champion` aliases, linked to the model logged in
the run (an MLflow 3 LoggedModel: the UI's model page leads to the run, metrics and files).

MLflow is reached only through `kiln.components.common.tracking` and `kiln.components.common.registry`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kiln.components.common.config import Config
from kiln.components.common.registry import CHAMPION, MODEL_ID_TAG, ModelRegistry
from kiln.components.common.tracking import Tracker, make_tracker
from kiln.components.evaluate.gate import unigram_rule

# Model files bigger than this are not copied into MLflow's artifact store: S3 holds the served
# copy (`model_uri`), and a registry that doubles every checkpoint-sized file is no help.
MAX_LOGGED_FILE_BYTES = 2 << 30

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


def version_description(cfg: Config, report: dict[str, Any], tags: dict[str, str]) -> str:
    """`publish.description`, else a one-line summary: metrics, val set, gate, code version."""
    if cfg.publish.description:
        return cfg.publish.description
    return (
        f"val_loss {report['val_loss']:.4f}, perplexity {report['perplexity']:.2f}, "
        f"bits/byte {report['bits_per_byte']:.4f} on val set {tags['val_set_digest'][:12]}; "
        f"eval gate {tags['eval_gate']}; {tags['code_version']}"
    )


def log_logged_model(
    tracker: Tracker, model_dir: Path, name: str, report: dict[str, Any], tags: dict[str, str]
) -> str | None:
    """The exported model as an MLflow 3 LoggedModel of the run: its Hugging Face files (weight
    files over `MAX_LOGGED_FILE_BYTES` stay in S3 only), its config as params, the eval metrics
    and the lineage tags, so the model page leads to the run, the metrics and the files."""
    hf = json.loads((model_dir / "config.json").read_text())
    big = sorted(
        p.relative_to(model_dir).as_posix()
        for p in model_dir.rglob("*")
        if p.is_file() and p.stat().st_size > MAX_LOGGED_FILE_BYTES
    )
    extra = {"files_only_in_s3": ", ".join(big)} if big else {}
    return tracker.log_model(
        model_dir,
        name,
        params={k: v for k, v in hf.items() if not isinstance(v, dict)},
        tags={**tags, **extra},
        metrics={f"eval/{k}": v for k, v in report.get("metrics", {}).items()},
        skip=big,
    )


def decide_champion(
    cfg: Config, reg: ModelRegistry, name: str, version: str, report: dict[str, Any]
) -> dict[str, Any]:
    """Move `champion` to `version`, or not, by the rule that applies.

    The eval gate must have passed and `publish.promote` be on; then, with a champion, `version`
    must beat it on the same validation set (`ModelRegistry.promote_if_better`); without one, its
    val loss must beat the unigram baseline of its tokenizer by `eval.unigram_margin` (a
    fine-tuned model: its gate, which required beating its base, is enough).

    Returns:
        {"moved": whether `version` is the champion now, "rule": which rule decided,
         "reason": the rule's verdict in one sentence}
    """
    gate = report["gate"]
    if not gate["passed"]:
        failed = gate.get("failed") or gate.get("reasons", [])
        reason = "eval gate failed: " + "; ".join(failed)
        return {"moved": False, "rule": "eval gate", "reason": reason}
    if not cfg.publish.promote:
        return {"moved": False, "rule": "publish.promote", "reason": "publish.promote is off"}
    current = reg.version_by_alias(name, CHAMPION)
    if current is None and report.get("kind") == "sft":
        # The gate that passed already required beating the base on the same conversations.
        reg.set_alias(name, version, CHAMPION)
        reason = "the first fine-tuned version, and its gate required beating its base model"
        return {"moved": True, "rule": "base model", "reason": reason}
    if current is None:
        verdict = unigram_rule(report.get("metrics", report), cfg.eval.unigram_margin)
        if verdict.passed:
            reg.set_alias(name, version, CHAMPION)
        return {"moved": verdict.passed, "rule": "unigram baseline", "reason": verdict.reason}
    result = reg.promote_if_better(name, version, cfg.tracking.gate_metric)
    return {"moved": result.passed, "rule": "champion comparison", "reason": result.reason}


def register_version(
    cfg: Config,
    report: dict[str, Any],
    tags: dict[str, str],
    name: str,
    training_run_id: str,
    tracker: Tracker,
    workdir: str = "kiln-work",
    model_dir: Path | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Register `tags['model_uri']` as a version of `name` (alias candidate; idempotent by
    `training_run_id`), linked to the LoggedModel of `model_dir`, and decide `champion`
    (`decide_champion`).

    Returns:
        ({"name", "version", "aliases", "created", "source", "model_id"},
         {"moved": bool, "rule": str, "reason": str})
    """
    reg = ModelRegistry(cfg.tracking.uri, workdir)
    metrics = {k: float(v) for k, v in report.get("metrics", {}).items()}
    existing = reg.find_by_training_run(name, training_run_id)
    if existing is not None:  # a re-publish: the version and its logged model exist already
        model_id = existing.tags.get(MODEL_ID_TAG)
    else:
        model_id = log_logged_model(tracker, model_dir, name, report, tags) if model_dir else None
    registered = reg.register(
        name,
        tags["model_uri"],
        training_run_id=training_run_id,
        mlflow_run_id=tracker.run_id or None,
        description=version_description(cfg, report, tags),
        tags=tags,
        metrics=metrics,
        model_id=model_id,
    )
    champion = decide_champion(cfg, reg, name, registered.version, report)
    info = reg.show(name, version=registered.version)
    tracker.set_tags(
        {
            "registered_model": name,
            "registered_version": registered.version,
            "champion_moved": str(champion["moved"]).lower(),
            "champion_rule": champion["rule"],
            "champion_reason": champion["reason"],
        }
    )
    out = {
        "name": name,
        "version": registered.version,
        "aliases": info["aliases"],
        "created": registered.created,
        "source": registered.source,
        "model_id": model_id or "",
    }
    return out, champion
