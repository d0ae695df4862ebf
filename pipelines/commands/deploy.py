"""`kiln deploy`: print (default) or apply the KServe InferenceService for a registered version."""

from __future__ import annotations

import argparse
import sys

from kiln.components.common import kube, storage
from kiln.components.common.errors import UserError
from kiln.components.publish.inference_service import RUNTIME
from kiln.pipelines.commands.common import add_config_args, config_from_args
from kiln.pipelines.commands.models import (
    add_registry_args,
    add_tracking_args,
    registry_from_args,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deploy",
        help="serve a registered model version on KServe with vLLM (dry run or apply)",
        description="Render the KServe InferenceService (vLLM runtime) for a registered model "
        "version and print it (--dry-run, the default) or apply it to the cluster (--apply). "
        "Only versions whose evaluation gate passed (tag eval_gate=passed, set by publish) are "
        "deployed unless --force. Resources default to the config's publish.serving_* fields. "
        "With --registry kubeflow the version comes from the Kubeflow (OpenShift AI) Model "
        "Registry: its model artifact's URI is the storageUri, its eval_gate property the gate.",
    )
    p.add_argument("name", metavar="NAME", help="registered model name, e.g. kiln-llama")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--alias", metavar="A", help="deploy the version this alias points at")
    which.add_argument("--version", metavar="V", help="deploy this version number")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--apply",
        action="store_true",
        help="create or replace the InferenceService with the Kubernetes client "
        "(in-cluster service account, else the current kubeconfig context)",
    )
    mode.add_argument(
        "--dry-run",
        action="store_true",
        help="print the InferenceService YAML and change nothing (the default)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="deploy even if the version's evaluation gate failed or is unknown",
    )
    p.add_argument(
        "--namespace",
        metavar="NS",
        help="target namespace (default: publish.serving_namespace, else the current one)",
    )
    p.add_argument(
        "--service-name",
        metavar="NAME",
        help="InferenceService name (default: publish.serving_name, else MODEL-vVERSION)",
    )
    p.add_argument("--gpus", type=int, help="GPUs per replica (default: publish.serving_gpus)")
    p.add_argument("--cpu", help="CPU request/limit per replica (default: publish.serving_cpu)")
    p.add_argument(
        "--memory", help="memory request/limit per replica (default: publish.serving_memory)"
    )
    p.add_argument(
        "--max-model-len", type=int, help="vLLM --max-model-len (default: the model's own)"
    )
    p.add_argument(
        "--queue-name",
        metavar="QUEUE",
        help="Kueue LocalQueue label on the InferenceService, which KServe copies to the "
        "predictor pods ('' = not queued; default: publish.serving_queue, kiln-queue)",
    )
    p.add_argument("--runtime", default=RUNTIME, help=f"ServingRuntime name (default: {RUNTIME})")
    p.add_argument(
        "--service-account",
        default=kube.MODEL_SERVER_SERVICE_ACCOUNT,
        help="service account whose data-connection Secret lets KServe read the model from S3 "
        f"(default: {kube.MODEL_SERVER_SERVICE_ACCOUNT})",
    )
    add_tracking_args(p)
    add_registry_args(p, config=False)
    add_config_args(p)
    p.set_defaults(func=run_deploy)


def run_deploy(args: argparse.Namespace) -> int:
    import yaml

    from kiln.components.publish.deploy import DeployRefused, deploy, plan_deployment

    try:
        plan = plan_deployment(
            registry_from_args(args),
            args.name,
            alias=args.alias,
            version=args.version,
            cfg=config_from_args(args),
            namespace=args.namespace,
            service_name=args.service_name,
            runtime=args.runtime,
            service_account=args.service_account,
            gpus=args.gpus,
            cpu=args.cpu,
            memory=args.memory,
            max_model_len=args.max_model_len,
            queue_name=args.queue_name,
            force=args.force,
        )
    except DeployRefused as e:
        print(f"kiln deploy: {e}", file=sys.stderr)
        return 1
    stand_in = _only_in_stand_in(plan.source, args.workdir)
    if stand_in and args.apply:
        raise UserError(stand_in)
    if stand_in:
        print(f"kiln deploy: warning: {stand_in}", file=sys.stderr)
    if plan.forced:
        print(
            f"kiln deploy: warning: --force: {args.name} v{plan.version} has eval_gate="
            f"{plan.eval_gate or '(none)'}",
            file=sys.stderr,
        )
    if not args.apply:
        print(yaml.safe_dump(plan.body, sort_keys=False), end="")
        return 0
    from kubernetes.client.exceptions import ApiException

    try:
        stored = deploy(plan)
    except ApiException as e:  # RBAC, a missing CRD, a rejected body: say so in one line
        print(f"kiln deploy: applying {plan.where} failed: {e.status} {e.reason}", file=sys.stderr)
        return 1
    rv = stored.get("metadata", {}).get("resourceVersion", "?")
    print(f"applied {plan.where} ({args.name} v{plan.version}, resourceVersion {rv})")
    return 0


def _only_in_stand_in(source: str, workdir: str) -> str:
    """Why a cluster cannot pull `source` when it is an s3:// URI that exists only in the local
    S3 stand-in (KILN_S3_LOCAL_ROOT, or `kiln run`'s WORKDIR/s3); '' otherwise."""
    s = storage.settings_for_workdir(workdir)
    local = storage.local_path(source, s) if storage.is_s3(source) else None
    if local is None or not local.exists():
        return ""
    return (
        f"{source} exists only in the local S3 stand-in {s.local_root} (no AWS_S3_ENDPOINT): a "
        "cluster cannot pull it; run the pipeline with a real S3 (AWS_S3_ENDPOINT, "
        "AWS_S3_BUCKET and credentials) and deploy the version it registers"
    )
