"""The steps of the SFT pipeline: conversations → sft → evaluate (publish is pretraining's).

    summary = conversations_step("s3://chats/raw/", "out/conversations", config_json)
    summary = sft_step("out/conversations", "out/sft", config_json, run_id)
    report = sft_evaluate_step("out/sft", "out/eval", config_json, run_id)

`inputs` is a list of inputs or one string of inputs separated by commas (files, directories,
globs, s3:// prefixes), as `kiln sft-data --input` takes them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kiln.components.common.pipeline_run import step_config
from kiln.components.sft.conversations import conversations


def conversations_step(
    inputs: list[str] | str, output_dir: str, config_json: str
) -> dict[str, Any]:
    """Run `conversations` with the run's `sft` config section.

    Args:
        inputs: .jsonl/.json inputs (optionally .gz/.zst), a list or comma-separated.
        output_dir: directory or s3:// prefix to write (train.jsonl, val.jsonl, rejects.jsonl,
            stats.json); replaced.
        config_json: the resolved config (`prepare_run`), or one with only its `sft` section.

    Returns:
        Counts: records in, kept, train, val, duplicates, rejected (total and per reason), and
        the sha256 digest of train.jsonl + val.jsonl.
    """
    cfg = step_config(config_json)
    if isinstance(inputs, str):
        inputs = [part.strip() for part in inputs.split(",") if part.strip()]
    stats = conversations(inputs, output_dir, cfg.sft)
    return {
        "records_in": stats.records_in,
        "kept": stats.kept,
        "train": stats.train,
        "val": stats.val,
        "duplicates": stats.duplicates,
        "rejected": sum(stats.rejected.values()),
        **{f"rejected_{reason}": n for reason, n in sorted(stats.rejected.items()) if n},
        "digest": stats.digest,
    }


def sft_step(
    conversations_dir: str, output_dir: str, config_json: str, run_id: str = ""
) -> dict[str, Any]:
    """Fine-tune `sft.base` on the conversations (`finetune`), tracked in the run's MLflow run.

    Args:
        conversations_dir: the conversations step's output (train.jsonl, val.jsonl, stats.json).
        output_dir: chat_tokens/, checkpoints/, train_log.jsonl and model/ (with the template).
        config_json: the resolved config (`prepare_run`).
        run_id: the pipeline's MLflow run ('' = not tracked).

    Returns:
        The training summary (checkpoint, model_dir, steps, final_loss, chat_tokens).
    """
    from kiln.components.common.pipeline_run import workdir
    from kiln.components.sft.finetune import finetune

    return finetune(conversations_dir, output_dir, step_config(config_json), run_id, workdir())


def sft_evaluate_step(
    trained_dir: str,
    output_dir: str,
    config_json: str,
    run_id: str = "",
    log_metric: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """Evaluate the chat model of `trained_dir` against its base (`evaluate_chat`); metrics go to
    `log_metric` (the KFP Metrics artifact) and, prefixed `eval/`, to the MLflow run.

    Returns:
        The eval report (`kiln.components.sft.evaluate`).
    """
    from kiln.components.evaluate.step import report_metrics
    from kiln.components.sft.evaluate import EVAL_JSON, evaluate_chat
    from kiln.components.sft.finetune import CHAT_TOKENS

    cfg = step_config(config_json)
    trained = Path(trained_dir)
    report = evaluate_chat(trained / "model", trained / CHAT_TOKENS, cfg, output_dir)
    report_metrics(report, cfg, run_id, Path(output_dir) / EVAL_JSON, log_metric)
    return report
