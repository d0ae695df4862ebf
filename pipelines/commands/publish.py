"""`kiln publish`: upload an evaluated model to S3 (verified), log it to MLflow, register it
(and in the Kubeflow Model Registry too when publish.model_registry_url is set)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from kiln.pipelines.commands.common import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "publish",
        help="upload a model + eval report to S3, log to MLflow, register a version",
        description="Upload the Hugging Face model directory, its eval report and a checkpoints "
        "index to OUTPUT with sha256 verification (committed last), then log metrics, params, "
        "lineage tags and artifacts to the MLflow run, register a model version (alias "
        "`candidate`; `champion` when both the eval gate and the registry gate pass) and write "
        "a KServe InferenceService manifest for it. Re-publishing the same run is idempotent.",
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="model directory written by `kiln train` (config.json, model.safetensors, tokenizer.json)",
    )
    p.add_argument(
        "--eval",
        required=True,
        metavar="FILE",
        help="eval.json written by `kiln evaluate` (or the directory that holds it)",
    )
    p.add_argument(
        "--output",
        required=True,
        metavar="URI",
        help="where to upload: s3://bucket/prefix, or a local directory standing in for S3",
    )
    p.add_argument(
        "--tokens", metavar="DIR", help="tokenized dataset, for the dataset/tokenizer digests"
    )
    p.add_argument(
        "--train",
        metavar="DIR",
        help="training output directory, for the checkpoints index and the loss curve",
    )
    p.add_argument(
        "--run-id",
        metavar="ID",
        help="MLflow run to log to (default: $MLFLOW_RUN_ID, else a new run); also the "
        "idempotency key of the registration",
    )
    p.add_argument(
        "--pipeline-run-id",
        default="",
        metavar="ID",
        help="pipeline (KFP) run id, recorded as a lineage tag",
    )
    p.add_argument(
        "--pipeline-run-name",
        default="",
        metavar="NAME",
        help="pipeline (KFP) run name, for the Kubeflow Model Registry's provenance",
    )
    p.add_argument(
        "--name", metavar="NAME", help="registered model name (default: tracking.model_name)"
    )
    p.add_argument(
        "--workdir",
        default=os.environ.get("KILN_WORKDIR", "kiln-work"),
        metavar="DIR",
        help="workdir of the default local MLflow store (default: $KILN_WORKDIR, else ./kiln-work)",
    )
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kiln.components.common.storage import StorageError
    from kiln.components.publish import publish

    cfg = config_from_args(args)
    try:
        result = publish(
            args.model,
            args.eval,
            args.output,
            cfg,
            tokens_dir=args.tokens,
            train_dir=args.train,
            run_id=args.run_id,
            pipeline_run_id=args.pipeline_run_id,
            pipeline_run_name=args.pipeline_run_name,
            model_name=args.name,
            workdir=args.workdir,
        )
    except StorageError as e:
        print(f"kiln publish: error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    print(f"model:     {result['model_uri']}  ({len(result['files'])} files, sha256 verified)")
    print(f"report:    {result['report_uri']}")
    reg = result["registered"]
    if reg:
        state = "registered" if reg["created"] else "already registered"
        aliases = ", ".join(reg["aliases"]) or "none"
        print(f"version:   {reg['name']} v{reg['version']} ({state}; aliases: {aliases})")
        print(
            f"champion:  {'moved' if result['champion']['moved'] else 'not moved'}: "
            f"{result['champion']['reason']}"
        )
    else:
        print(f"version:   not registered ({result['champion']['reason']})")
    kf = result.get("kubeflow")
    if kf:
        state = "registered" if kf["created"] else "already registered"
        print(
            f"kubeflow:  {kf['url']} ({state}; registered model {kf['registered_model_id']}, "
            f"version {kf['model_version_id']}, artifact {kf['model_artifact_id']})"
        )
    if result["mlflow_run_id"]:
        print(f"mlflow run: {result['mlflow_run_id']}")
    if result["inference_service"]:
        print(f"serving:   {result['inference_service']}")
    return 0
