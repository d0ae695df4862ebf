"""Options shared by the subcommands that take a Kiln config."""

from __future__ import annotations

import argparse

from kiln.components.common.config import PRESETS, Config, load_config


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """--preset / --config / --set, resolved in that order (later wins)."""
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="named starting config (default: the config file's `preset` key, else tiny)",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="TOML/YAML/JSON config file merged over the preset"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one field, e.g. --set train.max_steps=200 (repeatable; `kiln config --fields` lists them)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.preset, args.config, args.overrides)
