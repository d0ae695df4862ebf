"""The Kiln fine-tuning pipeline: prepare → conversations → sft → evaluate → publish.

    pipeline = build_sft_pipeline(PipelineOptions())
    kfp.compiler.Compiler().compile(pipeline, "sft.yaml")        # `kiln compile --pipeline sft`
    pipeline(corpus_uri="chats/", preset="sft-tiny", overrides='["sft.base=models:/kiln-llama@champion"]')
                                                                 # `kiln run --pipeline sft`

The base model is `sft.base` (a registered version, an s3:// model or a directory). The frame
(finalize as exit handler, prepare), the publish step and every Kubernetes setting (`harden`,
`training_pod`) are the pretraining pipeline's; the chat model is registered under
`tracking.model_name` (`kiln-llama-chat` in the sft presets) with its base in its lineage tags.
"""

# No `from __future__ import annotations`: KFP reads the pipeline's real parameter types.

from kfp import dsl

from kiln.components.publish.component import publish
from kiln.components.sft.component import conversations, sft, sft_evaluate
from kiln.pipelines.options import PipelineOptions
from kiln.pipelines.pretrain import harden, prepared_frame, publish_pod, training_pod

SFT_PIPELINE_NAME = "kiln-sft"


def build_sft_pipeline(opts: PipelineOptions | None = None):
    """The fine-tuning pipeline function, with the compile-time options applied."""
    opts = opts or PipelineOptions()

    @dsl.pipeline(
        name=SFT_PIPELINE_NAME,
        description="Fine-tune a registered base model into a chat model on conversations: "
        "validate and split them, train on assistant tokens, evaluate against the base, "
        "publish to S3 and the MLflow model registry.",
    )
    def kiln_sft(
        corpus_uri: str,
        preset: str = "sft-tiny",
        overrides: str = "",
        model_name: str = "",
        s3_bucket: str = "",
        mlflow_uri: str = "",
        ray_address: str = "",
        workers: int = 0,
        gpus_per_worker: int = 0,
        run_id: str = "",
    ):
        """Kiln fine-tuning run.

        Besides corpus_uri, the parameters are `RunParams`' fields, with the same defaults,
        passed on to `prepare` unchanged; set the base model with the override
        `sft.base=models:/NAME@ALIAS` (the sft presets default to models:/kiln-llama@champion).

        Args:
            corpus_uri: conversations (.jsonl/.json, messages or prompt/completion records):
                s3://bucket/prefix or files, comma-separated.
            preset: named config (sft-tiny, sft-small).
            overrides: config overrides `section.key=value`, a JSON list or one per line.
            model_name: registered model name, tracking.model_name ('' = the config's).
            s3_bucket: bucket for artifacts ('' = the data connection's AWS_S3_BUCKET).
            mlflow_uri: MLflow tracking URI ('' = MLFLOW_TRACKING_URI of the step).
            ray_address: Ray cluster (http://HEAD:8265 = Jobs API); '' = train in the step's pod.
            workers: Ray Train workers (0 = one plain process; -1 = the config's dist.workers).
            gpus_per_worker: GPUs per worker; also the training step's GPU request.
            run_id: write to this existing MLflow run ('' = a new one).
        """
        with prepared_frame(
            opts, "kiln-sft-run", preset=preset, overrides=overrides,
            model_name=model_name, s3_bucket=s3_bucket, mlflow_uri=mlflow_uri,
            ray_address=ray_address, workers=workers, gpus_per_worker=gpus_per_worker,
            run_id=run_id,
        ) as frame:  # fmt: skip
            config_json, mlflow_run = frame.config_json, frame.mlflow_run
            convs = conversations(corpus_uri=corpus_uri, config_json=config_json)
            train = sft(
                conversations=convs.outputs["conversations"],
                config_json=config_json,
                run_id=mlflow_run,
            ).set_caching_options(False)
            training_pod(train, opts, gpus_per_worker)
            ev = sft_evaluate(
                trained=train.outputs["trained"], config_json=config_json, run_id=mlflow_run
            ).set_caching_options(False)
            pub = publish(
                trained=train.outputs["trained"],
                report=ev.outputs["report"],
                tokens=convs.outputs["conversations"],
                config_json=config_json,
                run_id=mlflow_run,
                pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                pipeline_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            ).set_caching_options(False)
            publish_pod(pub, opts)
            for task in (convs, train, ev, pub):
                harden(task, opts)
                task.set_display_name(task.name.replace("-", " "))

    return kiln_sft


def compile_sft_pipeline(output: str, opts: PipelineOptions | None = None) -> str:
    """Compile the fine-tuning pipeline to KFP v2 YAML at `output`; returns the path."""
    from kfp import compiler

    compiler.Compiler().compile(build_sft_pipeline(opts), output)
    return output
