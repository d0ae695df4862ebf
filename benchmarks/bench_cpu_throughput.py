"""Benchmark 1: CPU training throughput, Kiln vs nanoGPT, side by side on this machine.

Same model size and batch as nanoGPT's README CPU run (4 layers, 4 heads, 128 wide, context 64,
batch 12, no compile), same data (nanoGPT's char-level Shakespeare ids, written as Kiln shards),
same thread count. Each round runs two pairs *at the same time, in alternating one-second slices*
(`interleave.py`): nanoGPT with Kiln, then Kiln with Kiln on Ray Train (1 worker). A shared VM
drifts by ±15% over tens of seconds; slices that alternate put the same drift on both runs of a
pair, where runs that follow each other do not. Each run's speed is the median of its per-step
times (nanoGPT's own `time … ms` per iteration; Kiln's step end times in train_log.jsonl). The
result is the median of the per-round ratios.

    python benchmarks/bench_cpu_throughput.py --nanogpt /path/to/nanoGPT [--iters 300] [--rounds 3]

Goals: Kiln (stock torch ops, plain process) ≥ 0.95× nanoGPT tokens/s; Kiln on stock Ray Train
(1 worker, public settings only) ≥ 0.88× Kiln plain.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import interleave  # noqa: E402
import kiln_runs  # noqa: E402
import nanogpt_peer  # noqa: E402


def main() -> None:
    ap = nanogpt_peer.argument_parser(__doc__)
    ap.add_argument("--iters", type=int, default=300, help="training iterations per run")
    ap.add_argument("--rounds", type=int, default=3, help="rounds (each runs both pairs)")
    ap.add_argument("--slice", type=float, default=1.0, help="seconds per alternating slice")
    ap.add_argument("--skip-ray", action="store_true", help="skip the Ray Train 1-worker run")
    args = ap.parse_args()
    nanogpt, text = nanogpt_peer.locate(args.nanogpt), nanogpt_peer.text_file(args.text)
    nanogpt_peer.prepare(nanogpt, text)
    work = Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    tokens = kiln_runs.char_level_tokens(nanogpt / "data" / "shakespeare_char", work / "tokens")
    sets = [
        # SwiGLU hidden 344 matches GPT-2's 4x GELU MLP: 0.81M parameters here vs nanoGPT's 0.80M.
        "model.ffn_dim=344",
        "model.dim=128", "model.n_layers=4", "model.n_heads=4", "model.n_kv_heads=4", "model.max_seq_len=64",
        "data.seq_len=64", "train.micro_batch_size=12", f"train.max_steps={args.iters}", "train.log_every=50",
        f"train.eval_every={args.iters}", "train.ckpt_every=100000", "train.sample_prompts=[]",
        "optim.lr=1e-3", "optim.warmup_steps=100",
    ]  # fmt: skip
    tokens_per_step = 12 * 64
    vs_peer, vs_plain = [], []
    for r in range(args.rounds):
        peer = nanogpt_peer.lane(
            nanogpt,
            [
                f"--max_iters={args.iters}",
                f"--lr_decay_iters={args.iters}",
                "--eval_interval=100000",
            ],
            work / f"peer{r}",
            work / f"peer{r}.log",
        )
        plain = kiln_runs.lane("kiln", tokens, work / f"plain{r}", sets)
        interleave.alternate(peer, plain, slice_s=args.slice)
        p, k = (lane.tokens_per_second(tokens_per_step) for lane in (peer, plain))
        vs_peer.append(k / p)
        line = f"round {r + 1}: nanoGPT {p:,.0f} tok/s | kiln {k:,.0f} tok/s ({k / p:.2f}x)"
        if not args.skip_ray:
            # The Ray run starts first: its cluster and worker start-up (~25 s) runs on its own.
            on_ray = kiln_runs.lane(
                "kiln on Ray", tokens, work / f"ray{r}", sets, workers=1,
                env={"RAY_AUTH_MODE": "disabled"},
            )  # fmt: skip
            plain = kiln_runs.lane("kiln", tokens, work / f"plain{r}b", sets)
            interleave.alternate(on_ray, plain, slice_s=args.slice)
            k2, rr = (lane.tokens_per_second(tokens_per_step) for lane in (plain, on_ray))
            vs_plain.append(rr / k2)
            line += f" || kiln {k2:,.0f} tok/s | kiln on Ray (1 worker) {rr:,.0f} tok/s ({rr / k2:.2f}x)"
        print(line, flush=True)
    print(
        f"\nkiln / nanoGPT tokens/s      : {statistics.median(vs_peer):.2f}x "
        f"(median of {args.rounds} rounds: {', '.join(f'{x:.2f}' for x in vs_peer)}; goal >= 0.95)"
    )
    if vs_plain:
        print(
            f"kiln on Ray / kiln tokens/s  : {statistics.median(vs_plain):.2f}x "
            f"(median of {args.rounds} rounds: {', '.join(f'{x:.2f}' for x in vs_plain)}; goal >= 0.88)"
        )


if __name__ == "__main__":
    main()
