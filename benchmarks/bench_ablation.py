"""Benchmark 4: what each training technique buys, at equal wall-clock, over several seeds.

Trains a preset as shipped (`mini` by default) and, row by row, the preset with one technique
switched (a boolean flipped, the other choice of a choice) for the same wall-clock budget on the
same text and tokens, once per seed (train.seed and data.seed), with Benchmark 2's budget rule
(the schedule fitted to 95% of the budget). Prints held-out bits per byte per seed, their mean,
and the change against the preset as a Markdown table: the ablation table of docs/training.md.

    python benchmarks/bench_ablation.py --text tinyshakespeare.txt [--budget-s 60] [--seeds 2]
    python benchmarks/bench_ablation.py --text F --no-toggles --row "no GQA:model.n_kv_heads=6"
    python benchmarks/bench_ablation.py --steps 400    # equal steps instead of equal wall-clock

Equal steps is the fairer test of a technique whose cost on this CPU is not its cost on a GPU
(Muon's Newton-Schulz iterations are a few matmuls, cheap on a GPU, dear on two cores).

Differences below the spread of the preset's own seeds are noise, not evidence.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nanogpt_peer  # noqa: E402
from bench_learning_efficiency import Lane, prepare_tokens  # noqa: E402

# (row label, key, choices): the row sets the first choice that differs from the preset's value.
TOGGLES = [
    ("optimizer", "optim.name", ["muon", "adamw"]),
    ("QK-norm", "model.qk_norm", [True, False]),
    ("MLP gate", "model.mlp_act", ["relu2", "silu"]),
    ("tied embeddings", "model.tie_embeddings", [True, False]),
    ("dropout", "model.dropout", [0.1, 0.0]),
    ("schedule", "optim.schedule", ["wsd", "cosine"]),
    ("embedding lr", "optim.embedding_lr", [0.0, 2e-2]),  # 0: the embedding at optim.lr
]


def toggle_rows(preset: str) -> list[tuple[str, list[str]]]:
    from kiln.components.common.config import load_config

    cfg = load_config(preset)
    rows = []
    for label, key, choices in TOGGLES:
        section, name = key.split(".")
        current = getattr(getattr(cfg, section), name)
        value = next(c for c in choices if c != current)
        shown = str(value).lower() if isinstance(value, bool) else value
        rows.append((label, [f"{key}={shown}"]))
    return rows


def parse_row(text: str) -> tuple[str, list[str]]:
    label, _, sets = text.partition(":")
    if not sets:
        raise argparse.ArgumentTypeError(f"--row needs LABEL:KEY=VALUE[,KEY=VALUE], got {text!r}")
    return label, sets.split(",")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--text", help="UTF-8 text (default: ../shared/data/tinyshakespeare.txt)")
    ap.add_argument("--preset", default="mini", help="preset the rows change (default: mini)")
    ap.add_argument("--budget-s", type=float, default=60.0, help="wall-clock per run (s)")
    ap.add_argument("--seeds", type=int, default=2, help="runs per row, seeds 0..N-1")
    ap.add_argument("--steps", type=int, help="train this many steps per run, not to a budget")
    ap.add_argument(
        "--row",
        dest="rows",
        action="append",
        type=parse_row,
        metavar="LABEL:KEY=VALUE[,KEY=VALUE]",
        help="a row to run after the default toggles (repeatable)",
    )
    ap.add_argument("--no-toggles", action="store_true", help="run only the --row rows")
    args = ap.parse_args()
    text = nanogpt_peer.text_file(args.text)
    work = Path(tempfile.mkdtemp(prefix="kiln-ablation-"))
    tokens = prepare_tokens(text, work, args.preset, None)
    toggles = [] if args.no_toggles else toggle_rows(args.preset)
    rows = [("preset as shipped", []), *toggles, *(args.rows or [])]

    started = time.perf_counter()
    results: list[tuple[str, list[str], list[float]]] = []
    for i, (label, sets) in enumerate(rows):
        lane = Lane(f"row{i}", args.preset, sets, args.steps or 0)
        scores = []
        for seed in range(args.seeds):
            seed_sets = [f"train.seed={1337 + seed}", f"data.seed={1234 + seed}"] if seed else []
            lane.sets = sets + seed_sets
            scores.append(lane.bits_per_byte(tokens, args.budget_s, work, tag=f"-s{seed}"))
        results.append((label, sets, scores))

    base = statistics.mean(results[0][2])
    per_run = (
        f"{args.steps} steps per run"
        if args.steps
        else f"{args.budget_s:.0f} s per run (start-up included)"
    )
    print(
        f"\n{text.name}, --preset {args.preset}, {per_run}, {args.seeds} seeds, "
        f"{time.perf_counter() - started:.0f} s in all\n"
    )
    print("| change | setting | val bits/byte per seed | mean | vs preset |")
    print("|---|---|---|---|---|")
    for label, sets, scores in results:
        mean = statistics.mean(scores)
        per_seed = " / ".join(f"{s:.4f}" for s in scores)
        delta = "—" if not sets else f"{100 * (mean / base - 1):+.1f}%"
        print(f"| {label} | {' '.join(sets) or '—'} | {per_seed} | {mean:.4f} | {delta} |")


if __name__ == "__main__":
    main()
