"""KFP component: the evaluate stage (held-out loss, perplexity, bits per byte, samples, gate)."""
# No `from __future__ import annotations`: KFP reads the real type annotations.

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from kiln.components.common.images import image_ref


@dsl.component(base_image=image_ref("cpu"), install_kfp_package=False)
def evaluate(
    trained: Input[Model],
    tokens: Input[Dataset],
    config_json: str,
    run_id: str,
    baseline_model: str,
    report: Output[Artifact],
    metrics: Output[Metrics],
):
    """Score the trained model on the held-out split and judge it against the gate.

    Args:
        trained: the pretrain step's output (the model is its model/ directory).
        tokens: the token shards the model was trained on (val split, tokenizer).
        config_json: the resolved Kiln config; uses `eval.*`.
        run_id: the pipeline's MLflow run (metrics and eval.json go there too).
        baseline_model: a model to compare with ('' = none): s3:// prefix or models:/NAME@ALIAS.
        report: eval.json (val loss, perplexity, bits per byte, samples, gate verdict).
        metrics: the same numbers as KFP metrics, shown in the pipeline UI.
    """
    from kiln.components.evaluate.step import evaluate_step

    evaluate_step(
        trained.path + "/model",
        tokens.path,
        report.path,
        config_json,
        run_id,
        baseline=baseline_model,
        log_metric=metrics.log_metric,
    )
