"""`kiln evaluate`: held-out loss, perplexity, bits per byte, samples and a gate verdict."""

from __future__ import annotations

import argparse
import json
import os

from kiln.pipelines.commands.common import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a trained model on the held-out split (writes eval.json)",
        description="Score a Hugging Face format model on the `val` shards of a tokenized dataset "
        "(validation loss, perplexity, bits per byte), sample from fixed prompts, optionally "
        "compare with a baseline model, and judge it against the `eval.*` gate thresholds. "
        "Writes OUTPUT/eval.json.",
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="model directory written by `kiln train` (config.json, model.safetensors, tokenizer.json)",
    )
    p.add_argument(
        "--tokens",
        required=True,
        metavar="DIR",
        help="tokenized dataset whose val shards are scored (manifest.json, tokenizer.json, val/)",
    )
    p.add_argument("--output", required=True, metavar="DIR", help="directory for eval.json")
    p.add_argument(
        "--baseline",
        metavar="DIR|URI",
        help="compare with this model on the same tokens: a directory, an s3:// model prefix "
        "or models:/NAME@ALIAS (e.g. models:/kiln-llama@champion)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 when the gate fails (default: report it and exit 0)",
    )
    p.add_argument(
        "--workdir",
        default=os.environ.get("KILN_WORKDIR", "kiln-work"),
        metavar="DIR",
        help="workdir of the default local MLflow store, for models:/ baselines "
        "(default: $KILN_WORKDIR, else ./kiln-work)",
    )
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kiln.components.evaluate import evaluate

    cfg = config_from_args(args)
    report = evaluate(
        args.model,
        args.tokens,
        args.output,
        cfg.eval,
        args.baseline,
        tracking_uri=cfg.tracking.uri,
        workdir=args.workdir,
    )
    print(
        f"val_loss {report['val_loss']:.4f}  perplexity {report['perplexity']:.2f}  "
        f"bits/byte {report['bits_per_byte']:.4f}  ({report['val_tokens']:,} tokens, "
        f"{report['val_bytes']:,} bytes)"
    )
    if report["baseline"]:
        b = report["baseline"]
        print(f"baseline {b['model_dir']}: val_loss {b['val_loss']:.4f}")
    for s in report["samples"]:
        print(f"sample: {json.dumps(s['text'])}")
    gate = report["gate"]
    print(f"gate: {'passed' if gate['passed'] else 'FAILED'}")
    for line in gate["reasons"]:
        print(f"  - {line}")
    print(f"wrote {os.path.join(args.output, 'eval.json')}")
    return 1 if args.strict and not gate["passed"] else 0
