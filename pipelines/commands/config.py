"""`kiln config`: print a resolved config, or the reference of every field."""

from __future__ import annotations

import argparse

from kiln.components.common.config import describe_fields
from kiln.pipelines.commands.common import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config",
        help="show the resolved config (preset + file + --set) or every field's meaning",
        description="Print the resolved configuration as JSON, or with --fields the reference "
        "of every key with its default and meaning.",
    )
    add_config_args(p)
    p.add_argument(
        "--fields", action="store_true", help="list every config key with default and help"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.fields:
        for key, default, help_text in describe_fields():
            print(f"{key:32} {default!r:>14}  {help_text}")
        return 0
    print(config_from_args(args).to_json())
    return 0
