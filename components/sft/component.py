"""KFP components of supervised fine-tuning: conversations, sft, and its evaluation."""

# No `from __future__ import annotations`: KFP reads the real type annotations.

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from kiln.components.common.images import image_ref


@dsl.component(base_image=image_ref("cpu"), install_kfp_package=False)
def conversations(corpus_uri: str, config_json: str, conversations: Output[Dataset]):
    """Validate, account for, deduplicate and split conversation records.

    Args:
        corpus_uri: .jsonl/.json conversations (messages or prompt/completion records): files,
            directories, globs or s3:// prefixes, comma-separated.
        config_json: the resolved Kiln config; uses `sft.*`.
        conversations: train.jsonl, val.jsonl, rejects.jsonl and stats.json.
    """
    from kiln.components.sft.step import conversations_step

    conversations_step(corpus_uri, conversations.path, config_json)


@dsl.component(base_image=image_ref("gpu"), install_kfp_package=False)
def sft(conversations: Input[Dataset], config_json: str, run_id: str, trained: Output[Model]):
    """Fine-tune the base model (`sft.base`) on the conversations, assistant tokens only.

    Args:
        conversations: the conversations step's train/val split.
        config_json: the resolved Kiln config; `sft.base` names the base model, `dist.*` says
            where training runs (as for pretraining).
        run_id: the pipeline's MLflow run (step-wise losses, loss curve, config).
        trained: chat_tokens/, checkpoints/step_N, train_log.jsonl and the chat model in
            Hugging Face format (with its chat template) under model/.
    """
    from kiln.components.sft.step import sft_step

    sft_step(conversations.path, trained.path, config_json, run_id)


@dsl.component(base_image=image_ref("cpu"), install_kfp_package=False)
def sft_evaluate(
    trained: Input[Model],
    config_json: str,
    run_id: str,
    report: Output[Artifact],
    metrics: Output[Metrics],
):
    """Score the chat model and its base on held-out assistant tokens; gate: beat the base.

    Args:
        trained: the sft step's output (model/ and chat_tokens/).
        config_json: the resolved Kiln config; uses `eval.*`.
        run_id: the pipeline's MLflow run (metrics and eval.json go there too).
        report: eval.json (assistant loss, perplexity, bits per byte, the base's, answers, gate).
        metrics: the same numbers as KFP metrics, shown in the pipeline UI.
    """
    from kiln.components.sft.step import sft_evaluate_step

    sft_evaluate_step(trained.path, report.path, config_json, run_id, metrics.log_metric)
