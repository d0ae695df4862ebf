"""`kiln config`: print a resolved config, or every field with its resolved value and meaning."""

from __future__ import annotations

import argparse
import json

from kiln.components.common.config import describe_fields
from kiln.pipelines.commands.common import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config",
        help="show the resolved config (preset + file + --set) or every field's meaning",
        description="Print the resolved configuration as JSON, or with --fields every key with "
        "its value in that resolved config (--preset, --config and --set applied) and its "
        "meaning.",
    )
    add_config_args(p)
    p.add_argument(
        "--fields",
        action="store_true",
        help="list every config key with its resolved value and help",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.fields:
        for key, value, help_text in describe_fields(cfg):
            print(f"{key:32} {json.dumps(value):>14}  {help_text}")
        return 0
    print(cfg.to_json())
    return 0
