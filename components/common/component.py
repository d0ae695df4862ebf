"""KFP components around the stages: `prepare` (config + MLflow run, first) and `finalize` (exit handler)."""
# No `from __future__ import annotations`: KFP reads the real type annotations.

from typing import NamedTuple

from kfp import dsl

from kiln.components.common.images import image_ref


@dsl.component(base_image=image_ref("cpu"), install_kfp_package=False)
def prepare(
    preset: str,
    overrides: str,
    model_name: str,
    s3_bucket: str,
    mlflow_uri: str,
    ray_address: str,
    workers: int,
    gpus_per_worker: int,
    run_id: str,
    pipeline_run_id: str,
) -> NamedTuple("Prepared", config_json=str, run_id=str, ingest_config=str, tokenize_config=str):
    """Resolve the Kiln config and open the MLflow run every later step writes to.

    The parameters are `RunParams`' fields (components/common/config/run_params.py, where each
    is explained; a test keeps the two in step) plus the KFP run id.

    Args:
        preset: named starting config (tiny, small, gpt2-124m, 1b).
        overrides: `section.key=value` overrides, a JSON list or one per line.
        model_name: registered model name, tracking.model_name ('' = the config's).
        s3_bucket: artifacts go to s3://BUCKET/kiln ('' = the data connection's AWS_S3_BUCKET).
        mlflow_uri: MLflow tracking URI ('' = $MLFLOW_TRACKING_URI).
        ray_address: Ray cluster for training ('' = train inside the pretrain step's pod).
        workers: Ray Train workers (0 = one plain process; -1 = the config's).
        gpus_per_worker: GPUs per training worker (0 = CPU).
        run_id: an existing MLflow run to write to ('' = open a new one).
        pipeline_run_id: the KFP run id, recorded as a tag.

    Returns:
        config_json: the resolved config; run_id: the MLflow run id ('' when not tracking);
        ingest_config / tokenize_config: only the section each data step reads (its cache key).
    """
    from kiln.components.common.pipeline_run import RunParams, prepare_run

    params = RunParams(
        preset=preset,
        overrides=overrides,
        model_name=model_name,
        s3_bucket=s3_bucket,
        mlflow_uri=mlflow_uri,
        ray_address=ray_address,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        run_id=run_id,
    )
    return prepare_run(params, pipeline_run_id=pipeline_run_id)


@dsl.component(base_image=image_ref("cpu"), install_kfp_package=False)
def finalize(
    preset: str,
    overrides: str,
    mlflow_uri: str,
    run_id: str,
    pipeline_run_id: str,
    status: dsl.PipelineTaskFinalStatus,
) -> str:
    """End the run's MLflow run however the pipeline ended (runs as the pipeline's exit handler).

    Args:
        preset: the pipeline's preset (to find the tracking settings).
        overrides: the pipeline's overrides.
        mlflow_uri: MLflow tracking URI ('' = $MLFLOW_TRACKING_URI).
        run_id: the MLflow run given to the pipeline ('' = the one tagged with the KFP run id).
        pipeline_run_id: the KFP run id.
        status: the final state of the pipeline's other steps (set by KFP).

    Returns:
        The MLflow run's final status: FINISHED, FAILED or KILLED ('' when not tracking).
    """
    from kiln.components.common.pipeline_run import RunParams, finish_run

    return finish_run(
        RunParams(preset=preset, overrides=overrides, mlflow_uri=mlflow_uri, run_id=run_id),
        pipeline_run_id=pipeline_run_id,
        state=status.state,
        error=status.error_message,
    )
