"""KFP component: the publish stage (verified S3 upload, MLflow registration, serving manifest)."""
# No `from __future__ import annotations`: KFP reads the real type annotations.

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from kiln.components.common.images import image_ref


@dsl.component(base_image=image_ref("cpu"), install_kfp_package=False)
def publish(
    trained: Input[Model],
    report: Input[Artifact],
    tokens: Input[Dataset],
    config_json: str,
    run_id: str,
    pipeline_run_id: str,
    published: Output[Artifact],
    pipeline_run_name: str = "",
):
    """Upload the model and its eval report to S3, register a version, end the MLflow run.

    Args:
        trained: the pretrain step's output (model/, checkpoints/).
        report: the evaluate step's eval.json.
        tokens: the token shards (lineage: dataset and tokenizer digests).
        config_json: the resolved Kiln config; uses `publish.*`, `storage.*`, `tracking.*`.
        run_id: the pipeline's MLflow run; also the idempotency key of the registration.
        pipeline_run_id: the KFP run id, recorded with the version.
        pipeline_run_name: the KFP run name (Kubeflow Model Registry provenance).
        published: publish.json (S3 URIs with sha256, registered name/version, aliases).
    """
    from kiln.components.publish.step import publish_step

    publish_step(
        trained.path + "/model",
        report.path,
        published.path,
        config_json,
        run_id,
        tokens_dir=tokens.path,
        train_dir=trained.path,
        pipeline_run_id=pipeline_run_id,
        pipeline_run_name=pipeline_run_name,
    )
