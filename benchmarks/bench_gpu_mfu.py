"""Benchmark 3: GPU throughput, MFU and loss of the `gpt2-124m` preset as shipped (seq 1024,
bf16, torch.compile, its optimizer).

Trains in this process on one GPU, on random token ids (throughput does not depend on the data)
or on a Kiln tokens directory (`--tokens`, from `kiln tokenize`, for a loss that means
something), and prints the median tokens/s and MFU of the log windows after the first (PaLM
FLOPs per token; peak from the detected GPU's bf16 datasheet) and the loss after N steps.
References: llm.c ~38-40% MFU on one H100 at this size, nanochat ~41% at a similar depth; the
goal of issue 18 is >= 45%. Skips without CUDA.

    python benchmarks/bench_gpu_mfu.py [--steps 30] [--micro-batch 16] [--no-compile]
    python benchmarks/bench_gpu_mfu.py --set optim.name=muon      # Muon, not the preset's AdamW
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kiln.components.common.config import load_config  # noqa: E402
from kiln.components.pretrain import pretrain  # noqa: E402
from kiln.components.tokenization.manifest import Manifest, ShardEntry, write_manifest  # noqa: E402
from kiln.components.tokenization.shards import write_shard  # noqa: E402


def random_tokens(root: Path, n: int, vocab: int = 50257) -> Path:
    ids = np.random.default_rng(0).integers(0, vocab, n)
    (root / "train").mkdir(parents=True)
    sha = write_shard(root / "train/000000.bin", ids, vocab_size=vocab)
    splits = {"train": [ShardEntry("train/000000.bin", n, sha)]}
    write_manifest(root, Manifest(vocab_size=vocab, dtype="uint16", eot_id=0, splits=splits))
    return root


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps (the first few warm up)")
    ap.add_argument("--micro-batch", type=int, default=16, help="sequences per micro-batch")
    ap.add_argument("--accum", type=int, default=4, help="micro-batches per step")
    ap.add_argument("--no-compile", action="store_true", help="eager mode")
    ap.add_argument("--tokens", help="a Kiln tokens directory to train on (default: random ids)")
    ap.add_argument(
        "--set", dest="sets", action="append", default=[], help="extra overrides (KEY=VALUE)"
    )
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: benchmark 3 skipped")
        return
    work = Path(tempfile.mkdtemp(prefix="kiln-gpu-bench-"))
    tokens_per_step = args.micro_batch * 1024 * args.accum
    cfg = load_config(
        "gpt2-124m",
        overrides=[
            f"train.max_steps={args.steps}", f"train.micro_batch_size={args.micro_batch}",
            f"train.tokens_per_step={tokens_per_step}", "train.log_every=5", "train.eval_every=0",
            f"train.ckpt_every={10 * args.steps}", "train.sample_prompts=[]", f"train.compile={not args.no_compile}",
            *args.sets,
        ],
    )  # fmt: skip
    if args.tokens:
        tokens = Path(args.tokens)
    else:
        tokens = random_tokens(work / "tokens", tokens_per_step * (args.steps + 2) + 1)
    result = pretrain(cfg, tokens, work / "run")
    records = [json.loads(line) for line in (work / "run/train_log.jsonl").read_text().splitlines()]
    windows = [r for r in records if "tokens_per_sec" in r][1:]  # the first includes compiling
    tok_s = statistics.median(r["tokens_per_sec"] for r in windows) if windows else 0.0
    mfu = statistics.median(r["mfu"] for r in windows if "mfu" in r) if windows else 0.0
    print(
        f"{torch.cuda.get_device_name()}: gpt2-124m {cfg.optim.name}, compile={cfg.train.compile}, "
        f"{tokens_per_step:,} tokens/step: {tok_s:,.0f} tokens/s, MFU {100 * mfu:.1f}% (goal >= 45%), "
        f"loss {result.losses[max(result.losses)]:.4f} after {result.step} steps"
    )


if __name__ == "__main__":
    main()
