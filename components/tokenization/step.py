"""The tokenize step of the pipeline: dataset directory → tokenizer + token shards, lineage tags.

summary = tokenize_step("out/dataset", "out/tokens", config_json, run_id)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.components.common.pipeline_run import step_config, step_tracker
from kiln.components.tokenization import tokenize


def tokenize_step(
    dataset_dir: str, output_dir: str, config_json: str, run_id: str = ""
) -> dict[str, Any]:
    """Train the BPE and encode both splits with the run's config; tag the run with digests.

    Args:
        dataset_dir: the ingest step's dataset directory.
        output_dir: receives tokenizer.json, train/ and val/ shards and manifest.json.
        config_json: the resolved config (`prepare_run`).
        run_id: the pipeline's MLflow run ('' = not tracked).

    Returns:
        Token counts, vocabulary size and the lineage digests.
    """
    cfg = step_config(config_json)
    manifest = tokenize(dataset_dir, output_dir, cfg.tokenizer)
    summary = {
        "vocab_size": manifest.vocab_size,
        "train_tokens": manifest.tokens("train"),
        "val_tokens": manifest.tokens("val"),
        "dataset_digest": manifest.dataset_digest,
        "tokenizer_sha256": manifest.tokenizer_sha256,
    }
    tracker = step_tracker(cfg, run_id)
    tracker.log_metrics({f"tokenize.{k}": summary[k] for k in ("train_tokens", "val_tokens")})
    tracker.set_tags(
        {"dataset_digest": manifest.dataset_digest, "tokenizer_digest": manifest.tokenizer_sha256}
    )
    tracker.log_artifact(Path(output_dir) / "manifest.json", "tokenize")
    return summary
