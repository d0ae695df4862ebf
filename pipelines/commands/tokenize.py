"""`kiln tokenize`: train (or load) a BPE tokenizer and encode a dataset into token shards."""

from __future__ import annotations

import argparse

from kiln.pipelines.commands.common import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tokenize",
        help="train/load a BPE tokenizer and write verified token shards + manifest.json",
        description="Read a `kiln ingest` dataset directory (or a .txt file / directory of .txt), "
        "train a byte-level BPE tokenizer on its train split (or load --tokenizer), encode train "
        "and val in parallel into token shards, and write manifest.json last. Tokenizer options "
        "are the `tokenizer.*` config keys (`kiln config --fields`).",
    )
    p.add_argument(
        "--dataset",
        required=True,
        metavar="DIR",
        help="ingest output directory (train/ and val/ parquet), or a .txt file or directory of .txt/.md",
    )
    p.add_argument(
        "--output", required=True, metavar="DIR", help="directory for tokenizer.json and shards"
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--vocab-size",
        type=int,
        metavar="N",
        help="train a tokenizer with N ids (sets tokenizer.vocab_size)",
    )
    group.add_argument(
        "--tokenizer",
        metavar="FILE",
        help="use this tokenizer.json (e.g. a Hugging Face model's) instead of training one",
    )
    p.add_argument(
        "--workers", type=int, help="encoding processes (sets tokenizer.workers; default 2)"
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="after writing, re-read every shard and check its sha256 against the manifest",
    )
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kiln.components.tokenization import tokenize
    from kiln.components.tokenization.manifest import read_manifest

    cfg = config_from_args(args).tokenizer
    if args.vocab_size is not None:
        cfg.vocab_size = args.vocab_size
    if args.workers is not None:
        cfg.workers = args.workers
    tokenize(args.dataset, args.output, cfg, tokenizer_json=args.tokenizer)
    if args.verify:
        read_manifest(args.output, verify=True)
        print(f"verified: every shard in {args.output} matches manifest.json")
    return 0
