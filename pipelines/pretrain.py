"""The Kiln pretraining pipeline: prepare → ingest → tokenize → pretrain → evaluate → publish.

    pipeline = build_pipeline(PipelineOptions(data_connection="kiln-data-connection"))
    kfp.compiler.Compiler().compile(pipeline, "pipeline.yaml")       # `kiln compile`
    pipeline(corpus_uri="corpus.jsonl", preset="tiny")                # `kiln run` (kfp.local)

Kubernetes plumbing lives here, not in the components: the data-connection Secret is attached
to every step as environment variables with kfp-kubernetes (`use_secret_as_env`: the compiled
YAML names the Secret, never a value), every step runs as non-root, the training step requests
GPUs, tolerates the GPU taint and waits in a Kueue LocalQueue (`queue_name`). Caching is on
for ingest and tokenize (pure functions of their inputs) and off for the steps that write to
MLflow, S3 or the registry.
"""

# No `from __future__ import annotations`: KFP reads the pipeline's real parameter types.

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple

from kfp import dsl
from kfp import kubernetes as k8s

from kiln.components.common import kube
from kiln.components.common.component import finalize, prepare
from kiln.components.evaluate.component import evaluate
from kiln.components.ingest.component import ingest
from kiln.components.pretrain.component import pretrain
from kiln.components.publish.component import publish
from kiln.components.tokenization.component import tokenize
from kiln.pipelines.options import PipelineOptions

PIPELINE_NAME = "kiln-pretrain"
DATA_CONNECTION_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_S3_ENDPOINT",
    "AWS_S3_BUCKET",
    "AWS_DEFAULT_REGION",
)
MLFLOW_AUTH_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
MODEL_REGISTRY_TOKEN_KEY = "token"  # key of the Model Registry token in its Secret


def harden(task: dsl.PipelineTask, opts: PipelineOptions) -> dsl.PipelineTask:
    """Secrets by reference, non-root, plain env: what every step gets."""
    k8s.use_secret_as_env(
        task,
        secret_name=opts.data_connection,
        secret_key_to_env={key: key for key in DATA_CONNECTION_KEYS},
        optional=True,  # a local-only MLflow/S3 setup may not need one
    )
    if opts.mlflow_secret:
        k8s.use_secret_as_env(
            task,
            secret_name=opts.mlflow_secret,
            secret_key_to_env={key: key for key in MLFLOW_AUTH_KEYS},
        )
    k8s.set_security_context(task, run_as_non_root=True)
    for name, value in sorted(opts.extra_env.items()):
        task.set_env_variable(name, value)
    return task


def training_pod(task: dsl.PipelineTask, opts: PipelineOptions, gpus) -> dsl.PipelineTask:
    """What a training step's pod gets: CPU/memory requests, GPUs and their toleration, the Kueue
    queue label, the Ray token, the shared volume."""
    task.set_cpu_request(opts.training_cpu).set_memory_request(opts.training_memory)
    task.set_accelerator_type(opts.gpu_resource).set_accelerator_limit(gpus)
    # Kueue's pod integration admits each labelled pod against the LocalQueue's quota.
    for key, value in kube.queue_labels(opts.queue_name, "queue_name").items():
        k8s.add_pod_label(task, key, value)
    # With dist.launcher=trainjob the step creates a TrainJob: same queue, Secret and volume.
    task.set_env_variable("KILN_QUEUE_NAME", opts.queue_name)
    task.set_env_variable("KILN_DATA_CONNECTION", opts.data_connection)
    if opts.shared_pvc:
        task.set_env_variable("KILN_SHARED_PVC", opts.shared_pvc)
    if opts.ray_token_secret:
        k8s.use_secret_as_env(
            task,
            secret_name=opts.ray_token_secret,
            secret_key_to_env={opts.ray_token_key: "RAY_AUTH_TOKEN"},
        )
        task.set_env_variable("RAY_AUTH_MODE", "token")
    if opts.shared_pvc:
        k8s.mount_pvc(task, pvc_name=opts.shared_pvc, mount_path=opts.shared_mount)
        task.set_env_variable("KILN_SHARED_DIR", opts.shared_mount)
    if opts.gpu_toleration:
        k8s.add_toleration(task, key=opts.gpu_toleration, operator="Exists", effect="NoSchedule")
    return task


def publish_pod(task: dsl.PipelineTask, opts: PipelineOptions) -> dsl.PipelineTask:
    """What the publish step's pod gets besides `harden`: the Kubeflow Model Registry token
    (only this step registers there, so only it sees the token)."""
    if opts.model_registry_secret:
        k8s.use_secret_as_env(
            task,
            secret_name=opts.model_registry_secret,
            secret_key_to_env={MODEL_REGISTRY_TOKEN_KEY: "MODEL_REGISTRY_TOKEN"},
        )
    return task


class Prepared(NamedTuple):
    """What `prepared_frame` opens: the prepare step and its outputs."""

    prep: dsl.PipelineTask
    config_json: Any  # prepare's resolved config (a pipeline channel)
    mlflow_run: Any  # prepare's MLflow run id


class DataSteps(NamedTuple):
    """What `run_frame` opens: the prepare step and the (cached) data steps."""

    prep: dsl.PipelineTask
    config_json: Any  # prepare's resolved config (a pipeline channel)
    mlflow_run: Any  # prepare's MLflow run id
    tokens: Any  # tokenize's token shards and tokenizer


@contextlib.contextmanager
def prepared_frame(opts: PipelineOptions, name: str, **run_params: Any) -> Iterator[Prepared]:
    """The frame every Kiln pipeline shares: `finalize` as the exit handler (it closes the MLflow
    run however the pipeline ends), then `prepare` inside it; the body adds its own steps within
    the `with`. `run_params` are `RunParams`' fields (prepare's inputs)."""
    # Runs last whatever happened: a failed or cancelled run's MLflow run is closed FAILED/KILLED.
    final = finalize(
        preset=run_params["preset"],
        overrides=run_params["overrides"],
        mlflow_uri=run_params["mlflow_uri"],
        run_id=run_params["run_id"],
        pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    ).set_caching_options(False)
    final.set_display_name("finalize")
    harden(final, opts)
    with dsl.ExitHandler(final, name=name):
        prep = prepare(**run_params, pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        prep.set_caching_options(False)
        harden(prep, opts)
        prep.set_display_name("prepare")
        yield Prepared(prep, prep.outputs["config_json"], prep.outputs["run_id"])


@contextlib.contextmanager
def run_frame(
    opts: PipelineOptions, name: str, corpus_uri: Any, **run_params: Any
) -> Iterator[DataSteps]:
    """`prepared_frame`, then ingest → tokenize (cached) inside it: the frame of the pretraining
    and sweep pipelines."""
    with prepared_frame(opts, name, **run_params) as frame:
        prep = frame.prep
        # The data steps get only their config section: their cache survives other changes.
        data = ingest(corpus_uri=corpus_uri, config_json=prep.outputs["ingest_config"])
        toks = tokenize(
            dataset=data.outputs["dataset"], config_json=prep.outputs["tokenize_config"]
        )
        for task in (data, toks):
            harden(task, opts)
            task.set_display_name(task.name.replace("-", " "))
        yield DataSteps(prep, frame.config_json, frame.mlflow_run, toks.outputs["tokens"])


def build_pipeline(opts: PipelineOptions | None = None):
    """The pipeline function, with the compile-time options applied."""
    opts = opts or PipelineOptions()

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Pretrain a LLaMA-style model from raw text: ingest, tokenize, pretrain on "
        "Ray, evaluate, publish to S3 and the MLflow model registry.",
    )
    def kiln_pretrain(
        corpus_uri: str,
        preset: str = "tiny",
        overrides: str = "",
        model_name: str = "",
        s3_bucket: str = "",
        mlflow_uri: str = "",
        ray_address: str = "",
        workers: int = 0,
        gpus_per_worker: int = 0,
        baseline_model: str = "",
        run_id: str = "",
    ):
        """Kiln pretraining run.

        Besides corpus_uri and baseline_model, the parameters are `RunParams`' fields, with the
        same defaults (a test keeps them in step), passed on to `prepare` unchanged.

        Args:
            corpus_uri: raw text: s3://bucket/prefix, hf://org/name or files; comma-separated.
            preset: named config (tiny, small, gpt2-124m, 1b).
            overrides: config overrides `section.key=value`, a JSON list or one per line.
            model_name: registered model name, tracking.model_name ('' = the config's).
            s3_bucket: bucket for artifacts ('' = the data connection's AWS_S3_BUCKET).
            mlflow_uri: MLflow tracking URI ('' = MLFLOW_TRACKING_URI of the step).
            ray_address: Ray cluster (http://HEAD:8265 = Jobs API); '' = train in the step's pod.
            workers: Ray Train workers (0 = one plain process; -1 = the config's dist.workers).
            gpus_per_worker: GPUs per worker; also the training step's GPU request.
            baseline_model: compare with this model in evaluate (models:/NAME@champion, s3://).
            run_id: write to this existing MLflow run ('' = a new one).
        """
        with run_frame(
            opts, "kiln-run", corpus_uri, preset=preset, overrides=overrides,
            model_name=model_name, s3_bucket=s3_bucket, mlflow_uri=mlflow_uri,
            ray_address=ray_address, workers=workers, gpus_per_worker=gpus_per_worker,
            run_id=run_id,
        ) as frame:  # fmt: skip
            config_json, mlflow_run = frame.config_json, frame.mlflow_run
            train = pretrain(tokens=frame.tokens, config_json=config_json, run_id=mlflow_run)
            train.set_caching_options(False)
            training_pod(train, opts, gpus_per_worker)
            ev = evaluate(
                trained=train.outputs["trained"],
                tokens=frame.tokens,
                config_json=config_json,
                run_id=mlflow_run,
                baseline_model=baseline_model,
            ).set_caching_options(False)
            pub = publish(
                trained=train.outputs["trained"],
                report=ev.outputs["report"],
                tokens=frame.tokens,
                config_json=config_json,
                run_id=mlflow_run,
                pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                pipeline_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            ).set_caching_options(False)
            publish_pod(pub, opts)
            for task in (train, ev, pub):
                harden(task, opts)
            for task in (ev, pub):
                task.set_display_name(task.name.replace("-", " "))

    return kiln_pretrain


def compile_pipeline(output: str, opts: PipelineOptions | None = None) -> str:
    """Compile the pipeline to KFP v2 YAML at `output`; returns the path."""
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(opts), output)
    return output
