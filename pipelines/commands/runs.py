"""`kiln runs list|get`: pipeline runs on a Kubeflow Pipelines / OpenShift AI DSP server."""

from __future__ import annotations

import argparse
import json

from kiln.pipelines.commands.submit import add_connection_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "runs",
        help="list pipeline runs on a cluster or show one run's status",
        description="Read pipeline runs from a KFP v2 API server (same --host/--token as "
        "`kiln submit`).",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = actions.add_parser("list", help="the newest runs, newest first")
    add_connection_args(ls)
    ls.add_argument("--experiment", default="", help="only runs of this experiment")
    ls.add_argument("--limit", type=int, default=20, help="how many runs (default: 20)")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=run_list)
    get = actions.add_parser("get", help="one run's state, times and error")
    add_connection_args(get)
    get.add_argument("run_id", metavar="RUN_ID", help="the id `kiln submit` printed")
    get.add_argument("--json", action="store_true", help="print JSON")
    get.set_defaults(func=run_get)


def run_list(args: argparse.Namespace) -> int:
    from kiln.pipelines.remote import connect, list_runs

    client = connect(args.host, args.token, args.namespace, verify_ssl=not args.insecure)
    runs = list_runs(client, args.experiment, args.limit)
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    if not runs:
        print("no runs")
    for r in runs:
        print(f"{r['run_id']}  {r['state']:<10}  {r['created']:<27}  {r['name']}")
    return 0


def run_get(args: argparse.Namespace) -> int:
    from kiln.pipelines.remote import connect, run_link, run_summary

    client = connect(args.host, args.token, args.namespace, verify_ssl=not args.insecure)
    info = run_summary(client.get_run(args.run_id))
    info["link"] = run_link(client, args.run_id)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:<9} {value}")
    return 0 if info["state"] not in {"FAILED", "CANCELED"} else 1
