"""Benchmark 1: CPU training throughput, Kiln vs nanoGPT, side by side on this machine.

Same model size and batch as nanoGPT's README CPU run (4 layers, 4 heads, 128 wide, context 64,
batch 12, no compile), same data (nanoGPT's char-level Shakespeare ids, written as Kiln shards),
same thread count. Runs alternate (peer, Kiln, Kiln on Ray Train with 1 worker) for `--rounds`
rounds. Each run's figure is the median of its steady log windows. A shared VM drifts by ±10%
over minutes, so the ratios are taken within each round (runs seconds apart) and the median
of those per-round ratios is the result; the ratio of the overall medians is printed too.

    python benchmarks/bench_cpu_throughput.py --nanogpt /path/to/nanoGPT [--iters 300] [--rounds 2]

Goals: Kiln ≥ 1.0× nanoGPT tokens/s; Kiln on Ray (1 worker) ≥ 0.95× Kiln plain.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kiln_runs  # noqa: E402
import nanogpt_peer  # noqa: E402


def main() -> None:
    ap = nanogpt_peer.argument_parser(__doc__)
    ap.add_argument("--iters", type=int, default=300, help="training iterations per run")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds")
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
    peer, plain, on_ray = [], [], []
    for r in range(args.rounds):
        run = nanogpt_peer.run(
            nanogpt,
            [
                f"--max_iters={args.iters}",
                f"--lr_decay_iters={args.iters}",
                "--eval_interval=100000",
            ],
            work / f"peer{r}",
        )
        peer.append(run.tokens_per_second)
        plain.append(kiln_runs.train(tokens, work / f"plain{r}", sets).tokens_per_second)
        if not args.skip_ray:
            ray_sets = [*sets, "dist.cpus_per_worker=2"]  # the same 2 cores as the plain process
            env = {"RAY_AUTH_MODE": "disabled"}
            on_ray.append(
                kiln_runs.train(
                    tokens, work / f"ray{r}", ray_sets, workers=1, env=env
                ).tokens_per_second
            )
        print(
            f"round {r + 1}: nanoGPT {peer[-1]:,.0f} tok/s | kiln {plain[-1]:,.0f} tok/s"
            + (f" | kiln on Ray (1 worker) {on_ray[-1]:,.0f} tok/s" if on_ray else ""),
            flush=True,
        )
    p, k = statistics.median(peer), statistics.median(plain)
    vs_peer = statistics.median(b / a for a, b in zip(peer, plain, strict=True))
    print(f"\nnanoGPT train.py  : {p:>10,.0f} tokens/s (median of {args.rounds})")
    print(
        f"kiln train        : {k:>10,.0f} tokens/s   ratio vs nanoGPT {vs_peer:.2f}x "
        f"(median of per-round ratios; ratio of medians {k / p:.2f}x; goal >= 1.00)"
    )
    if on_ray:
        rr = statistics.median(on_ray)
        vs_plain = statistics.median(b / a for a, b in zip(plain, on_ray, strict=True))
        print(
            f"kiln on Ray Train : {rr:>10,.0f} tokens/s   ratio vs kiln plain {vs_plain:.2f}x "
            f"(median of per-round ratios; ratio of medians {rr / k:.2f}x; goal >= 0.95)"
        )


if __name__ == "__main__":
    main()
