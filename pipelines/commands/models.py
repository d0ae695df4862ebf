"""`kiln models`: list registered models, show a version (metrics, lineage, source), promote.

    kiln models list                                           # MLflow (the default)
    kiln models show kiln-llama --version 3 --registry kubeflow --registry-url https://…

`list` and `show` also read the Kubeflow (OpenShift AI) Model Registry that publish mirrors to.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

from kiln.components.common.errors import UserError
from kiln.components.common.registry import CHAMPION, ModelRegistry
from kiln.components.common.tracking import StoreMissing
from kiln.pipelines.commands.common import add_config_args, config_from_args

if TYPE_CHECKING:
    from kiln.components.publish.kubeflow_registry import KubeflowRegistry


def add_tracking_args(p: argparse.ArgumentParser) -> None:
    """--tracking-uri / --workdir: which MLflow tracking server or local store to read."""
    p.add_argument(
        "--tracking-uri",
        default="",
        metavar="URI",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the local store "
        "sqlite:///WORKDIR/mlflow.db that `kiln run` writes)",
    )
    p.add_argument(
        "--workdir",
        default=os.environ.get("KILN_WORKDIR", "kiln-work"),
        metavar="DIR",
        help="workdir of local runs: its MLflow store is the default, and without an S3 endpoint "
        "s3:// URIs are read from its local stand-in WORKDIR/s3 (default: $KILN_WORKDIR, else "
        "./kiln-work)",
    )


def add_registry_args(p: argparse.ArgumentParser, config: bool = True) -> None:
    """--registry mlflow|kubeflow and --registry-url (plus --preset/--config/--set when `config`:
    the Kubeflow URL and author may come from the config's `publish` section)."""
    p.add_argument(
        "--registry",
        choices=("mlflow", "kubeflow"),
        default="mlflow",
        help="which registry to read: mlflow (default) or kubeflow, the Kubeflow (OpenShift AI) "
        "Model Registry that publish also registers to when publish.model_registry_url is set",
    )
    p.add_argument(
        "--registry-url",
        default="",
        metavar="URL",
        help="Kubeflow Model Registry REST URL (default: publish.model_registry_url, e.g. "
        "--set publish.model_registry_url=https://…); token: $MODEL_REGISTRY_TOKEN",
    )
    if config:
        add_config_args(p)


def registry_from_args(args: argparse.Namespace) -> ModelRegistry | KubeflowRegistry:
    """The registry the options name. MLflow (--tracking-uri/--workdir) must exist already (a
    one-line error, not a new empty store; seconds, not minutes, for a dead server); Kubeflow
    (--registry kubeflow) is a `KubeflowRegistry` with the same `show`."""
    if getattr(args, "registry", "mlflow") != "kubeflow":
        return ModelRegistry.existing(args.tracking_uri, args.workdir)
    from kiln.components.publish.kubeflow_registry import KubeflowRegistry

    cfg = config_from_args(args)
    url = args.registry_url or cfg.publish.model_registry_url
    if not url:
        raise UserError(
            "--registry kubeflow needs the registry's address: --registry-url URL or "
            "--set publish.model_registry_url=URL"
        )
    return KubeflowRegistry(url, cfg.publish.model_registry_author)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="registered models: list, show a version, promote (MLflow registry)",
        description="Read and manage the model registry that `kiln run`/publish writes to.",
    )
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    ls = msub.add_parser("list", help="every registered model with its versions and aliases")
    add_tracking_args(ls)
    add_registry_args(ls)
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=run_list)

    show = msub.add_parser("show", help="one version: metrics, lineage tags, source URI, aliases")
    show.add_argument("name", metavar="NAME", help="registered model name, e.g. kiln-llama")
    which = show.add_mutually_exclusive_group()
    which.add_argument("--version", metavar="V", help="version number (default: the latest)")
    which.add_argument("--alias", metavar="A", help="alias, e.g. champion or candidate")
    add_tracking_args(show)
    add_registry_args(show)
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    show.set_defaults(func=run_show)

    pr = msub.add_parser("promote", help="point an alias (default: champion) at a version")
    pr.add_argument("name", metavar="NAME", help="registered model name")
    pr.add_argument("version", metavar="VERSION", help="version number to promote")
    pr.add_argument("--alias", default=CHAMPION, help="alias to move (default: champion)")
    pr.add_argument(
        "--if-better",
        action="store_true",
        help="move champion only if the version's val loss beats the current champion's "
        "(the publish gate); without it the alias is moved unconditionally",
    )
    add_tracking_args(pr)
    pr.set_defaults(func=run_promote)


def run_list(args: argparse.Namespace) -> int:
    try:
        models = registry_from_args(args).list_models()
    except StoreMissing as e:  # nothing tracked yet: say so in one line, an empty list
        print(f"no registered models: {e}", file=sys.stdout if not args.json else sys.stderr)
        if args.json:
            print("[]")
        return 0
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    if not models:
        print("no registered models")
        return 0
    if args.registry == "kubeflow":  # no aliases there; its ids instead
        print(f"{'NAME':30} {'VERSIONS':>8} {'LATEST':>6}  ID")
        for m in models:
            print(f"{m['name']:30} {m['versions']:>8} {m['latest'] or '-':>6}  {m['id']}")
        return 0
    print(f"{'NAME':30} {'VERSIONS':>8} {'LATEST':>6}  ALIASES")
    for m in models:
        aliases = ", ".join(f"{a}=v{v}" for a, v in sorted(m["aliases"].items())) or "-"
        print(f"{m['name']:30} {m['versions']:>8} {m['latest'] or '-':>6}  {aliases}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    info = registry_from_args(args).show(args.name, version=args.version, alias=args.alias)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    print(f"{info['name']} version {info['version']}  aliases: {', '.join(info['aliases']) or '-'}")
    print(f"  source:      {info['source']}")
    if info["description"]:
        print(f"  description: {info['description']}")
    if info["mlflow_run_id"]:
        print(f"  mlflow run:  {info['mlflow_run_id']}")
    for title, mapping in (("metrics", info["metrics"]), ("run metrics", info["run_metrics"])):
        if mapping:
            print(f"  {title}:")
            for k, v in sorted(mapping.items()):
                print(f"    {k:28} {v:.6g}")
    print("  lineage tags:" if "kubeflow" not in info else "  properties:")
    for k, v in sorted(info["tags"].items()):
        print(f"    {k:28} {v}")
    if "kubeflow" in info:
        print(f"  kubeflow model registry {info['url']}:")
        for k, v in sorted(info["kubeflow"].items()):
            print(f"    {k:28} {v}")
    return 0


def run_promote(args: argparse.Namespace) -> int:
    reg = registry_from_args(args)
    reg.show(args.name, version=args.version)  # a clear error for an unknown model/version
    if args.if_better:
        result = reg.gate(args.name, args.version)
        if not result.passed:
            print(f"not promoted: {result.reason}")
            return 1
        print(f"gate passed: {result.reason}")
    reg.set_alias(args.name, args.version, args.alias)
    print(f"{args.name}@{args.alias} → version {args.version}")
    return 0
