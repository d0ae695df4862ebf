"""The Kiln scaling-law sweep pipeline: prepare → ingest → tokenize → grid → N × train+eval → fit.

    pipeline = build_sweep_pipeline(PipelineOptions())
    kfp.compiler.Compiler().compile(pipeline, "sweep.yaml")          # `kiln compile --pipeline sweep`
    pipeline(corpus_uri="corpus/", budgets="1e10,3e10,1e11")          # `kiln sweep` (kfp.local)

The data steps are the pretraining pipeline's, cached the same way, so every point trains on
the same token shards and is scored on the same held-out split. The points run in a
`dsl.ParallelFor` (each a training pod, or a Ray job with `ray_address`); the fit step collects
them. One MLflow run holds the sweep (params, the fit, sweep.json and plots); each point is a
child run of it. Kubernetes settings are the pretraining pipeline's (`harden`, `training_pod`).
"""

# No `from __future__ import annotations`: KFP reads the pipeline's real parameter types.

from kfp import dsl

from kiln.components.scaling.component import sweep_fit, sweep_grid, sweep_point
from kiln.pipelines.options import PipelineOptions
from kiln.pipelines.pretrain import harden, run_frame, training_pod

SWEEP_PIPELINE_NAME = "kiln-sweep"


def build_sweep_pipeline(opts: PipelineOptions | None = None):
    """The sweep pipeline function, with the compile-time options applied."""
    opts = opts or PipelineOptions()

    @dsl.pipeline(
        name=SWEEP_PIPELINE_NAME,
        description="Scaling-law sweep: train an isoFLOP grid of model sizes per compute budget "
        "on one corpus, fit the compute-optimal N and D, log the fit to MLflow.",
    )
    def kiln_sweep(
        corpus_uri: str,
        budgets: str,
        sizes: int = 3,
        spread: float = 3.0,
        target_budget: float = 0.0,
        preset: str = "tiny",
        overrides: str = "",
        model_name: str = "",
        s3_bucket: str = "",
        mlflow_uri: str = "",
        ray_address: str = "",
        workers: int = 0,
        gpus_per_worker: int = 0,
        run_id: str = "",
    ):
        """Kiln scaling-law sweep.

        Args:
            corpus_uri: raw text: s3://bucket/prefix, hf://org/name or files; comma-separated.
            budgets: compute budgets in FLOPs, comma-separated (at least 2; e.g. 1e18,3e18,1e19).
            sizes: model sizes per budget (at least 3).
            spread: largest size ÷ Chinchilla's optimum per budget (and optimum ÷ smallest).
            target_budget: FLOPs to recommend N and D for in sweep.json (0 = none).
            preset: named config whose shape family and batch the points use.
            overrides: config overrides `section.key=value`, a JSON list or one per line.
            model_name: tracking.model_name (a sweep registers no model; kept for RunParams).
            s3_bucket: bucket for artifacts ('' = the data connection's AWS_S3_BUCKET).
            mlflow_uri: MLflow tracking URI ('' = MLFLOW_TRACKING_URI of the step).
            ray_address: Ray cluster (http://HEAD:8265 = each point a Ray job).
            workers: Ray Train workers per point (0 = one plain process).
            gpus_per_worker: GPUs per worker; also each point's GPU request.
            run_id: write to this existing MLflow run ('' = a new one).
        """
        with run_frame(
            opts, "kiln-sweep", corpus_uri, preset=preset, overrides=overrides,
            model_name=model_name, s3_bucket=s3_bucket, mlflow_uri=mlflow_uri,
            ray_address=ray_address, workers=workers, gpus_per_worker=gpus_per_worker,
            run_id=run_id,
        ) as frame:  # fmt: skip
            config_json, mlflow_run = frame.config_json, frame.mlflow_run
            grid = sweep_grid(
                tokens=frame.tokens,
                config_json=config_json,
                run_id=mlflow_run,
                budgets=budgets,
                sizes=sizes,
                spread=spread,
            )
            with dsl.ParallelFor(grid.output, parallelism=opts.sweep_parallelism) as point:
                # Each item carries its config and the sweep's run: KFP's local runner (2.17)
                # hands a ParallelFor body the loop item for every other task-output parameter.
                run = sweep_point(tokens=frame.tokens, point=point)
                run.set_caching_options(False)
                training_pod(run, opts, gpus_per_worker)
                harden(run, opts)
                run.set_display_name("train and score")
            fitted = sweep_fit(
                results=dsl.Collected(run.outputs["Output"]),
                config_json=config_json,
                run_id=mlflow_run,
                target_budget=target_budget,
            ).set_caching_options(False)
            for task in (grid, fitted):
                harden(task, opts)
                task.set_display_name(task.name.replace("-", " "))

    return kiln_sweep


def compile_sweep_pipeline(output: str, opts: PipelineOptions | None = None) -> str:
    """Compile the sweep pipeline to KFP v2 YAML at `output`; returns the path."""
    from kfp import compiler

    compiler.Compiler().compile(build_sweep_pipeline(opts), output)
    return output
