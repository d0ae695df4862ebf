"""`kiln`: the command line for every stage of the pipeline.

Each subcommand lives in `pipelines/commands/<name>.py` and exposes `register(subparsers)`, which
adds its parser and sets `func` to the handler. `kiln COMMAND --help` explains every option.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Order here is the order shown by `kiln --help`.
COMMANDS = [
    "ingest",
    "tokenize",
    "train",
    "evaluate",
    "publish",
    "generate",
    "config",
    "models",
    "artifacts",
    "run",
    "compile",
    "submit",
    "runs",
    "deploy",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiln",
        description="Kiln: pretrain LLaMA-style language models from raw text "
        "(ingest → tokenize → pretrain → evaluate → publish).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"kiln.pipelines.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        # Bad input: a clear one-line message instead of a traceback.
        print(f"kiln {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
