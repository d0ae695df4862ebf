"""Options shared by the subcommands that take a Kiln config."""

from __future__ import annotations

import argparse

from kiln.components.common.config import PRESETS, Config, RunParams, load_config
from kiln.components.common.errors import UserError


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


def add_pipeline_choice(parser: argparse.ArgumentParser, data_note: str) -> None:
    """--pipeline pretrain|sft and --base, for the commands that run a pipeline (`kiln run`,
    `kiln submit`); `data_note` says what --data is for a fine-tuning run there."""
    parser.add_argument(
        "--pipeline",
        choices=["pretrain", "sft"],
        default="pretrain",
        help=f"pretrain (default) | sft: fine-tune --base into a chat model on conversations "
        f"({data_note}); --preset tiny/small then mean sft-tiny/sft-small",
    )
    parser.add_argument(
        "--base",
        default="",
        metavar="MODEL",
        help="with --pipeline sft: the model to fine-tune (sft.base): models:/NAME@ALIAS, "
        "s3://… or a model directory (default: the preset's, models:/kiln-llama@champion)",
    )


def pipeline_params(args: argparse.Namespace) -> RunParams:
    """The run parameters of `add_pipeline_choice`'s command: for sft, the sft- preset of the
    one named and `--base` as the override sft.base."""
    params = RunParams.from_args(args)
    if args.pipeline != "sft":
        if args.base:
            raise UserError("--base is for --pipeline sft (the model to fine-tune)")
        return params
    if not params.preset.startswith("sft-"):
        params.preset = f"sft-{params.preset}"
    if params.preset not in PRESETS:
        raise UserError(f"--pipeline sft has no preset {params.preset}: use sft-tiny or sft-small")
    if args.base:
        params.overrides.append(f"sft.base={args.base}")
    return params
