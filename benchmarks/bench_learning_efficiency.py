"""Benchmark 2: learning efficiency at equal wall-clock, Kiln vs nanoGPT, in bits per byte.

nanoGPT runs its README CPU config (char-level Shakespeare, 2000 iterations); its wall-clock W
becomes Kiln's budget. Kiln trains its own tokenizer on the same first 90% of
the text (any UTF-8 file, `--text`), measures its step time in a short calibration run, then
trains for as many steps as fit in W, with `train.time_limit_s` as a hard stop (process
wall-clock, start-up included), and is scored with `kiln evaluate` on the whole held-out last
10% (split by characters, as nanoGPT's prepare.py does). Bits per byte makes a char-level and a
BPE model comparable: nanoGPT's val loss in nats/char ÷ ln 2 × (characters per UTF-8 byte of
the held-out text), which is 1 for ASCII and below 1 for text with multi-byte characters.

    python benchmarks/bench_learning_efficiency.py --nanogpt /path/to/nanoGPT
    python benchmarks/bench_learning_efficiency.py --budget-s 120 --versus optim.name=muon

Goal (issue 18): Kiln ≤ 0.75× nanoGPT's val bits/byte on tinyshakespeare, ≤ 0.72× on other text.
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kiln_runs  # noqa: E402
import nanogpt_peer  # noqa: E402

# Kiln's recipe for this budget: a wider, shallower model on ~3.5 bytes/token BPE.
RECIPE = [
    "model.dim=192", "model.n_layers=4", "model.n_heads=6", "model.n_kv_heads=2", "model.max_seq_len=128",
    "data.seq_len=128", "train.micro_batch_size=16", "train.log_every=50", "train.ckpt_every=100000",
    "train.eval_batches=10", "train.sample_prompts=[]", "optim.lr=3e-3", "optim.warmup_steps=50",
    "optim.min_lr_ratio=0.05", "optim.weight_decay=0.1",
]  # fmt: skip


def main() -> None:
    ap = nanogpt_peer.argument_parser(__doc__)
    ap.add_argument("--vocab-size", type=int, default=1024, help="Kiln BPE vocabulary size")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra Kiln overrides")
    ap.add_argument("--budget-s", type=float, help="skip nanoGPT and use this wall-clock budget")
    ap.add_argument(
        "--versus",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="also train Kiln with these overrides at the same budget and print the ratio "
        "(e.g. --versus optim.name=muon)",
    )
    args = ap.parse_args()
    text = nanogpt_peer.text_file(args.text)
    work = Path(tempfile.mkdtemp(prefix="kiln-bench-"))

    if args.budget_s:
        budget, peer_bpb = args.budget_s, None
    else:
        nanogpt = nanogpt_peer.locate(args.nanogpt)
        nanogpt_peer.prepare(nanogpt, text)
        peer = nanogpt_peer.run(
            nanogpt, ["--max_iters=2000", "--lr_decay_iters=2000"], work / "peer"
        )
        step, loss = peer.val_losses[-1]
        chars_per_byte = held_out_chars_per_byte(text)
        budget, peer_bpb = peer.wall_s, loss / math.log(2) * chars_per_byte
        print(
            f"nanoGPT: {step} iters in {budget:.0f} s, val loss {loss:.4f} nats/char × "
            f"{chars_per_byte:.4f} chars/byte = {peer_bpb:.4f} bits/byte",
            flush=True,
        )

    from kiln.components.common.config import TokenizerConfig
    from kiln.components.tokenization import tokenize

    dataset = kiln_runs.split_dataset(text, work / "dataset")
    tokenize(dataset, work / "tokens", TokenizerConfig(vocab_size=args.vocab_size))
    recipe = RECIPE + args.sets
    bpb = kiln_bits_per_byte("kiln", recipe, budget, work)
    if peer_bpb is not None:
        print(
            f"\nbits/byte  nanoGPT {peer_bpb:.4f} | kiln {bpb:.4f} | ratio kiln/nanoGPT {bpb / peer_bpb:.3f} (goal <= 0.75 on tinyshakespeare, <= 0.72 elsewhere)"
        )
    if args.versus:
        other = kiln_bits_per_byte("kiln+versus", recipe + args.versus, budget, work)
        print(
            f"\nbits/byte at equal wall-clock ({budget:.0f} s): kiln {bpb:.4f} | with "
            f"{' '.join(args.versus)} {other:.4f} | ratio {other / bpb:.3f} "
            f"({abs(100 * (1 - other / bpb)):.1f}% {'lower' if other < bpb else 'higher'})"
        )


def held_out_chars_per_byte(text: Path, val_fraction: float = 0.1) -> float:
    """Characters per UTF-8 byte of the held-out split (the last 10% of the characters)."""
    data = text.read_text(encoding="utf-8")
    val = data[int(len(data) * (1 - val_fraction)) :]
    return len(val) / len(val.encode("utf-8"))


def kiln_bits_per_byte(name: str, recipe: list[str], budget: float, work: Path) -> float:
    """Calibrate the step time, train for as many steps as fit in `budget` seconds (start-up
    included), score on the whole held-out split; returns bits per byte."""
    from kiln.components.common.config import EvalConfig, load_config
    from kiln.components.evaluate import evaluate

    calib = kiln_runs.train(
        work / "tokens",
        work / f"{name}-calib",
        [*recipe, "train.max_steps=60", "train.eval_every=1000"],
    )
    cfg = load_config("tiny", overrides=recipe)  # the preset `kiln_runs.train` starts from
    tokens_per_step = cfg.train.tokens_per_step or cfg.train.micro_batch_size * cfg.data.seq_len
    overhead = calib.wall_s - 60 * tokens_per_step / calib.tokens_per_second
    steps = int((budget - overhead) * calib.tokens_per_second / tokens_per_step * 0.97)
    print(
        f"{name}: {calib.tokens_per_second:,.0f} tok/s, start-up {overhead:.1f} s -> {steps} steps fit in {budget:.0f} s",
        flush=True,
    )
    # The hard stop leaves ~5% of the budget for the final validation and the export.
    limit = f"train.time_limit_s={0.95 * budget:.1f}"
    run = kiln_runs.train(
        work / "tokens",
        work / name,
        [*recipe, f"train.max_steps={steps}", f"train.eval_every={steps}", limit],
    )
    report = evaluate(
        str(run.output / "model"), str(work / "tokens"), str(work / f"{name}-eval"),
        EvalConfig(max_tokens=0),
    )  # fmt: skip
    print(
        f"{name}: {last_step(run.output)} of {steps} steps in {run.wall_s:.0f} s "
        f"({100 * run.wall_s / budget:.0f}% of the budget), val loss {report['val_loss']:.4f} nats/token, val {report['bits_per_byte']:.4f} bits/byte over {report['val_bytes']:,} bytes",
        flush=True,
    )
    return report["bits_per_byte"]


def last_step(output: Path) -> int:
    from kiln.components.pretrain.runtime import read_train_log

    losses = read_train_log(output)
    return max(losses) if losses else 0


if __name__ == "__main__":
    main()
