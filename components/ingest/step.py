"""The ingest step of the pipeline: corpus URI(s) → dataset directory, stats to the tracker.

    summary = ingest_step("s3://corpus/raw/", "out/dataset", config_json, run_id)

`corpus_uri` is one or more inputs separated by commas (files, globs, s3:// prefixes, hf://
datasets, `name=` prefixes), as `kiln ingest --input` takes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.components.common.pipeline_run import step_config, step_tracker
from kiln.components.ingest import ingest


def ingest_step(
    corpus_uri: str, output_dir: str, config_json: str, run_id: str = ""
) -> dict[str, Any]:
    """Run `ingest` with the run's config and record its accounting in the run.

    Args:
        corpus_uri: comma-separated inputs (see `ingest`).
        output_dir: dataset directory to write (train/, val/, stats.json).
        config_json: the resolved config (`prepare_run`).
        run_id: the pipeline's MLflow run ('' = not tracked).

    Returns:
        Counts: documents in, kept, duplicates, filtered, unreadable, files read and skipped,
        documents and text bytes per split.
    """
    cfg = step_config(config_json)
    inputs = [part.strip() for part in corpus_uri.split(",") if part.strip()]
    if not inputs:
        raise ValueError("ingest: corpus_uri is empty; give a file, glob, s3:// or hf:// input")
    stats = ingest(inputs, output_dir, cfg.ingest)
    summary = {
        "documents_in": stats.documents_in,
        "kept": stats.kept,
        "duplicates": stats.duplicates_exact + stats.duplicates_near,
        "filtered": sum(stats.filtered.values()),
        "unreadable": sum(stats.unreadable.values()),
        "files_read": stats.files,
        "files_skipped": sum(stats.skipped_files.values()),
        **{f"{split}_docs": info["docs"] for split, info in stats.splits.items()},
        **{f"{split}_bytes": info["bytes"] for split, info in stats.splits.items()},
    }
    tracker = step_tracker(cfg, run_id)
    tracker.log_metrics({f"ingest.{k}": v for k, v in summary.items()})
    tracker.set_tags({"corpus_uri": corpus_uri})
    tracker.log_artifact(Path(output_dir) / "stats.json", "ingest")
    return summary
