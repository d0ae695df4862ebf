"""`kiln ingest`: raw text → cleaned, filtered, deduplicated train/val parquet + stats.json."""

from __future__ import annotations

import argparse

from kiln.pipelines.commands.common import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="read, clean, filter, deduplicate and split raw text into a dataset directory",
        description="Read text from files, directories, globs, s3:// prefixes or hf:// datasets "
        "(.txt .md .jsonl .json .parquet, optionally .gz/.zst), normalize it, drop low-quality "
        "text (Gopher/C4/FineWeb heuristics), language-filter, redact PII, remove exact and near "
        "duplicates, and write train/ and val/ parquet shards with stats.json and rejects.jsonl. "
        "Every knob is an `ingest.*` config key (`kiln config --fields`), e.g. "
        "--set ingest.dedup.threshold=0.8 --set ingest.languages=en.",
    )
    p.add_argument(
        "--input",
        required=True,
        nargs="+",
        action="extend",
        metavar="PATH_OR_URI",
        help="inputs: files, directories, globs (quote them), s3://bucket/prefix, "
        "hf://org/name[:config][@split]; prefix NAME= to name the source for "
        "ingest.source_weights (e.g. web=crawl/*.jsonl.zst). Repeatable.",
    )
    p.add_argument(
        "--output", required=True, metavar="DIR", help="dataset directory to write (replaced)"
    )
    p.add_argument(
        "--workers", type=int, help="reader/filter processes (sets ingest.workers; default 2)"
    )
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kiln.components.ingest import ingest

    cfg = config_from_args(args).ingest
    if args.workers is not None:
        cfg.workers = args.workers
    ingest(args.input, args.output, cfg)
    return 0
