"""`kiln generate`: sample text from a Hugging Face format model directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate text from a trained model",
        description="Load a model directory written by `kiln train` (Hugging Face Llama format, with "
        "tokenizer.json) and continue a prompt.",
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="model directory (config.json, model.safetensors, tokenizer.json)",
    )
    p.add_argument("--prompt", required=True, action="append", help="text to continue (repeatable)")
    p.add_argument(
        "--max-new-tokens", type=int, default=100, help="tokens to generate (default 100)"
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        help="sampling temperature; 0 = greedy (default 0.8)",
    )
    p.add_argument(
        "--top-k",
        type=int,
        default=50,
        help="sample from the k most likely tokens; 0 = off (default 50)",
    )
    p.add_argument(
        "--top-p", type=float, default=1.0, help="nucleus sampling mass; 1 = off (default 1.0)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="random seed for reproducible samples (default 0)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from tokenizers import Tokenizer

    from kiln.components.pretrain.export import import_hf

    model_dir = Path(args.model)
    tok_file = model_dir / "tokenizer.json"
    if not tok_file.exists():
        raise FileNotFoundError(f"{tok_file} not found: the model directory needs its tokenizer")
    tokenizer = Tokenizer.from_file(str(tok_file))
    model = import_hf(model_dir).eval()
    eos = tokenizer.token_to_id("<|endoftext|>")
    gen = torch.Generator().manual_seed(args.seed)
    for prompt in args.prompt:
        ids = tokenizer.encode(prompt).ids or ([eos] if eos is not None else [0])
        out = model.generate(
            torch.tensor([ids]),
            args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k or None,
            top_p=args.top_p,
            eos_id=eos,
            generator=gen,
        )
        print(tokenizer.decode(out[0].tolist()))
    return 0
