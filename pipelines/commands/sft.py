"""`kiln sft`: fine-tune a base model into a chat model on conversations, then score it."""

from __future__ import annotations

import argparse
from pathlib import Path

from kiln.pipelines.commands.common import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sft",
        help="fine-tune a base model into a chat model on conversations (assistant-only loss)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Fine-tune a base model on the conversations `kiln sft-data` wrote, with the pretraining loop
(checkpoints, exact resume, Ray Train workers, FSDP2): the base tokenizer gains chat markers
(<|system|> <|user|> <|assistant|> <|end|>, new ids after its last one), only assistant tokens
and their <|end|> are learned, and OUTPUT/model is a Hugging Face model whose
tokenizer_config.json carries the chat template (transformers' apply_chat_template renders
exactly what was trained). Then the model and its base are scored on the held-out
conversations (OUTPUT/eval/eval.json); the gate passes when the model beats its base.

examples:
  kiln sft --base models:/kiln-llama@champion --conversations convs/ --output ft/
  kiln sft --base ./my-model --conversations convs/ --output ft/ --workers 2
  kiln sft ... --output ft/ --resume            # continue an interrupted run exactly
""",
    )
    p.add_argument(
        "--base",
        metavar="MODEL",
        help="model to fine-tune (sets sft.base): models:/NAME@ALIAS or models:/NAME/VERSION, a "
        "Hugging Face model directory, or s3://… (default: the preset's, "
        "models:/kiln-llama@champion)",
    )
    p.add_argument(
        "--conversations",
        required=True,
        metavar="DIR",
        help="output of `kiln sft-data` (train.jsonl, val.jsonl, stats.json), local or s3://",
    )
    p.add_argument(
        "--output", required=True, metavar="DIR", help="run directory (checkpoints, model, eval)"
    )
    add_config_args(p)
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="Ray Train workers (sets dist.workers; 0 = plain process)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint in --output"
    )
    p.add_argument(
        "--workdir",
        default="kiln-work",
        metavar="DIR",
        help="where the local MLflow store is, for models:/ bases (default: kiln-work)",
    )
    p.set_defaults(func=run, preset_default="sft-tiny")


def run(args: argparse.Namespace) -> int:
    from kiln.components.common.config import with_changes
    from kiln.components.common.errors import UserError
    from kiln.components.pretrain import checkpoint as ckpt

    if args.preset is None and not args.config:
        args.preset = "sft-tiny"
    changes = {"sft.base": args.base, "dist.workers": args.workers}
    cfg = with_changes(config_from_args(args), {k: v for k, v in changes.items() if v is not None})
    output = Path(args.output)
    if ckpt.latest_checkpoint(output / "checkpoints") and not args.resume:
        raise UserError(
            f"{output}/checkpoints already holds checkpoints: pass --resume to continue, or use a new --output"
        )
    from kiln.components.sft.prepare import check_base

    check_base(cfg.sft.base, cfg, args.workdir)
    from kiln.components.sft.evaluate import evaluate_chat
    from kiln.components.sft.finetune import finetune

    summary = finetune(args.conversations, output, cfg, workdir=args.workdir)
    report = evaluate_chat(summary["model_dir"], summary["chat_tokens"], cfg, output / "eval")
    m = report["metrics"]
    print(
        f"chat model: {summary['model_dir']} ({summary['steps']} steps)\n"
        f"held-out assistant loss {m['val_loss']:.4f} (base {m['baseline_val_loss']:.4f}), "
        f"{m['bits_per_byte']:.3f} bits/byte; gate {'passed' if report['gate']['passed'] else 'FAILED'}"
    )
    for sample in report["samples"]:
        print(f"  {sample['prompt']} → {sample['answer']}")
    print(f"try it: kiln chat --model {summary['model_dir']}")
    return 0
