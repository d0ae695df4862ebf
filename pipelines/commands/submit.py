"""`kiln submit`: create a pipeline run on a Kubeflow Pipelines / OpenShift AI DSP server."""

from __future__ import annotations

import argparse

from kiln.components.common.config import RunParams
from kiln.pipelines.commands.common import add_pipeline_choice, pipeline_params
from kiln.pipelines.commands.compile import add_pipeline_options, options_from_args


def add_connection_args(p: argparse.ArgumentParser) -> None:
    """--host/--token/--namespace/--insecure, shared with `kiln runs`."""
    p.add_argument(
        "--host",
        required=True,
        metavar="URL",
        help="KFP API URL; on OpenShift AI the Data Science Pipelines route, e.g. "
        "https://ds-pipeline-dspa-PROJECT.apps.CLUSTER",
    )
    p.add_argument(
        "--token",
        default=None,
        metavar="TOKEN",
        help="bearer token (default: $KFP_TOKEN, else the current kube config context's token, "
        "e.g. after `oc login`, else the pod's service-account token, e.g. in a workbench); "
        "prefer the env var: a flag shows up in `ps`",
    )
    p.add_argument(
        "--namespace",
        default=None,
        help="KFP namespace / profile for multi-user Kubeflow (default: the server's)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the server's TLS certificate (self-signed test clusters only)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submit",
        help="run the pretraining (or fine-tuning) pipeline on a Kubeflow / OpenShift AI cluster",
        description="Compile the pipeline and create a run on a KFP v2 API server (Kubeflow "
        "Pipelines, or OpenShift AI Data Science Pipelines with a bearer token). Prints the run id "
        "and a link to it. S3 credentials come from the data-connection Secret on the cluster.",
    )
    add_connection_args(p)
    p.add_argument(
        "--data",
        required=True,
        metavar="URI",
        help="corpus the cluster can read: s3://bucket/prefix or hf://org/name (comma-separated)",
    )
    p.add_argument(
        "--experiment", default="kiln", help="experiment to file the run under (default: kiln)"
    )
    p.add_argument("--run-name", default="", help="run name (default: kiln-pretrain-<time>)")
    RunParams.add_arguments(p)
    p.add_argument(
        "--baseline", default="", help="model to compare with, e.g. models:/kiln-llama@champion"
    )
    add_pipeline_choice(p, "--data: s3:// conversations the cluster can read")
    p.add_argument(
        "--upload-as",
        default="",
        metavar="NAME",
        help="also upload the pipeline under NAME (a new version when it exists) and run that",
    )
    add_pipeline_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kiln.components.common.errors import UserError
    from kiln.pipelines.remote import SubmitRequest, connect, submit

    if args.pipeline == "sft" and args.baseline:
        raise UserError("--baseline is for the pretraining pipeline (sft compares with its base)")
    params = pipeline_params(args)
    params.resolve()  # a bad preset or override fails here, before any request
    client = connect(args.host, args.token, args.namespace, verify_ssl=not args.insecure)
    req = SubmitRequest(
        corpus_uri=args.data,
        params=params,
        pipeline=args.pipeline,
        baseline_model=args.baseline,
        experiment=args.experiment,
        run_name=args.run_name,
        upload_as=args.upload_as,
        options=options_from_args(args),
    )
    done = submit(client, req)
    print(f"run id: {done.run_id}\nlink:   {done.link}")
    return 0
