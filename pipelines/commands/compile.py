"""`kiln compile`: write the pretraining pipeline as KFP v2 YAML (for a KFP / OpenShift AI UI)."""

from __future__ import annotations

import argparse

from kiln.pipelines.options import PipelineOptions


def add_pipeline_options(p: argparse.ArgumentParser) -> None:
    """Compile-time options shared by `kiln compile` and `kiln submit`."""
    defaults = PipelineOptions()
    p.add_argument(
        "--data-connection",
        default=defaults.data_connection,
        metavar="SECRET",
        help="Secret holding the S3 data connection (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
        "AWS_S3_ENDPOINT, AWS_S3_BUCKET, AWS_DEFAULT_REGION), attached to every step as env vars "
        f"by name; its values never enter the YAML (default: {defaults.data_connection})",
    )
    p.add_argument(
        "--mlflow-secret",
        default="",
        metavar="SECRET",
        help="Secret with MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD for an MLflow server "
        "with auth (default: none)",
    )
    p.add_argument(
        "--model-registry-secret",
        default="",
        metavar="SECRET",
        help="Secret whose key `token` the publish step gets as MODEL_REGISTRY_TOKEN, for a "
        "Kubeflow Model Registry (publish.model_registry_url) (default: none)",
    )
    p.add_argument(
        "--gpu-resource",
        default=defaults.gpu_resource,
        metavar="NAME",
        help=f"accelerator resource the training step requests (default: {defaults.gpu_resource})",
    )
    p.add_argument(
        "--gpu-toleration",
        default=defaults.gpu_toleration,
        metavar="KEY",
        help="taint key the training step tolerates ('' = none; default: "
        f"{defaults.gpu_toleration})",
    )
    p.add_argument(
        "--training-cpu",
        default=defaults.training_cpu,
        help=f"CPU request of the training step (default: {defaults.training_cpu})",
    )
    p.add_argument(
        "--training-memory",
        default=defaults.training_memory,
        help=f"memory request of the training step (default: {defaults.training_memory})",
    )
    p.add_argument(
        "--ray-token-secret",
        default="",
        metavar="SECRET",
        help="Secret with the Ray cluster's auth token, given to the training step as "
        "RAY_AUTH_TOKEN for Ray addresses with token auth (default: none)",
    )
    p.add_argument(
        "--ray-token-key",
        default=defaults.ray_token_key,
        metavar="KEY",
        help=f"key of the token in --ray-token-secret (default: {defaults.ray_token_key})",
    )
    p.add_argument(
        "--shared-pvc",
        default="",
        metavar="PVC",
        help="PersistentVolumeClaim (ReadWriteMany) that the Ray cluster mounts too: with a Ray "
        "address the training step stages token shards and outputs on it (default: none)",
    )
    p.add_argument(
        "--shared-mount",
        default=defaults.shared_mount,
        metavar="PATH",
        help=f"mount path of --shared-pvc, the same in the Ray pods (default: {defaults.shared_mount})",
    )
    p.add_argument(
        "--queue-name",
        default=defaults.queue_name,
        metavar="QUEUE",
        help="Kueue LocalQueue of the training steps' pods (label kueue.x-k8s.io/queue-name; "
        f"'' = none; default: {defaults.queue_name}, the one manifests/base ships)",
    )
    p.add_argument(
        "--sweep-parallelism",
        type=int,
        default=defaults.sweep_parallelism,
        metavar="N",
        help="kiln-sweep only: points trained at once (0 = all; default: 0)",
    )
    p.add_argument(
        "--env",
        dest="extra_env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="plain (non-secret) env var for every step, e.g. KILN_S3_PART_SIZE_MB=128 (repeatable)",
    )


def options_from_args(args: argparse.Namespace) -> PipelineOptions:
    """PipelineOptions from the parsed `add_pipeline_options` flags."""
    env = {}
    for item in args.extra_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--env {item!r}: expected NAME=VALUE")
        env[name] = value
    return PipelineOptions(
        data_connection=args.data_connection,
        mlflow_secret=args.mlflow_secret,
        model_registry_secret=args.model_registry_secret,
        gpu_resource=args.gpu_resource,
        gpu_toleration=args.gpu_toleration,
        training_cpu=args.training_cpu,
        training_memory=args.training_memory,
        extra_env=env,
        shared_pvc=args.shared_pvc,
        shared_mount=args.shared_mount,
        ray_token_secret=args.ray_token_secret,
        ray_token_key=args.ray_token_key,
        sweep_parallelism=args.sweep_parallelism,
        queue_name=args.queue_name,
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compile",
        help="write the pretraining (or sweep, or sft) pipeline as KFP v2 YAML",
        description="Compile the Kiln pretraining pipeline (prepare → ingest → tokenize → "
        "pretrain → evaluate → publish), or with --pipeline sweep the scaling-law sweep "
        "(prepare → ingest → tokenize → grid → train and score each point → fit), to KFP v2 "
        "YAML that a Kubeflow Pipelines or OpenShift AI Data Science Pipelines UI can import. "
        "Images come from KILN_IMAGE_* (see components/common/images.py); run parameters "
        "(corpus, preset, overrides, budgets, ...) are set when the run is created.",
    )
    p.add_argument(
        "--pipeline",
        choices=("pretrain", "sweep", "sft"),
        default="pretrain",
        help="which pipeline (default: pretrain): pretrain | sweep | sft (fine-tune a base "
        "model on conversations: prepare → conversations → sft → evaluate → publish)",
    )
    p.add_argument(
        "--output",
        "-o",
        default="pipeline.yaml",
        metavar="FILE",
        help="where to write the YAML (default: pipeline.yaml)",
    )
    add_pipeline_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.pipeline == "sweep":
        from kiln.pipelines.sweep import compile_sweep_pipeline as compile_pipeline
    elif args.pipeline == "sft":
        from kiln.pipelines.sft import compile_sft_pipeline as compile_pipeline
    else:
        from kiln.pipelines.pretrain import compile_pipeline

    path = compile_pipeline(args.output, options_from_args(args))
    print(f"wrote {path}")
    return 0
