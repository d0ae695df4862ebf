"""Benchmark 2: learning efficiency at equal wall-clock, Kiln vs nanoGPT, in bits per byte.

nanoGPT runs its README CPU config (char-level Shakespeare, 2000 iterations); its wall-clock W
becomes Kiln's budget. Kiln (a preset as shipped, `mini` by default, plus only the budget's
settings) trains its own tokenizer on the same first 90% of the text (any UTF-8 file, `--text`),
trains with `train.time_limit_s` at 95% of W (process wall-clock, start-up included) and
`train.fit_to_time_limit`, which sizes the schedule to the steps that fit once the pace is known,
and is scored with `kiln evaluate` on the whole held-out last 10% (split by characters, as
nanoGPT's prepare.py does). Bits per byte makes a char-level and a BPE model comparable:
nanoGPT's val loss in nats/char ÷ ln 2 × (characters per UTF-8 byte of the held-out text), which
is 1 for ASCII and below 1 for text with multi-byte characters.

    python benchmarks/bench_learning_efficiency.py --nanogpt /path/to/nanoGPT
    python benchmarks/bench_learning_efficiency.py --budget-s 120 --versus optim.name=muon

Goal (issue 18): Kiln ≤ 0.75× nanoGPT's val bits/byte on tinyshakespeare, ≤ 0.72× on other text.
"""

from __future__ import annotations

import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kiln_runs  # noqa: E402
import nanogpt_peer  # noqa: E402


def main() -> None:
    ap = nanogpt_peer.argument_parser(__doc__)
    ap.add_argument("--preset", default="mini", help="Kiln preset, as shipped (default: mini)")
    ap.add_argument(
        "--vocab-size", type=int, help="Kiln BPE vocabulary size (default: the preset's)"
    )
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        help="extra Kiln overrides (the "
        "result then measures the preset plus these, not the preset as shipped)",
    )
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

    tokens = prepare_tokens(text, work, args.preset, args.vocab_size)
    kiln = Lane("kiln", args.preset, args.sets)
    bpb = kiln.bits_per_byte(tokens, budget, work)
    if peer_bpb is not None:
        print(
            f"\nbits/byte  nanoGPT {peer_bpb:.4f} | kiln ({kiln.describe()}) {bpb:.4f} | ratio "
            f"kiln/nanoGPT {bpb / peer_bpb:.3f} (goal <= 0.75 on tinyshakespeare, <= 0.72 elsewhere)"
        )
    if args.versus:
        other = Lane("kiln+versus", args.preset, args.sets + args.versus)
        obpb = other.bits_per_byte(tokens, budget, work)
        print(
            f"\nbits/byte at equal wall-clock ({budget:.0f} s): kiln {bpb:.4f} | with "
            f"{' '.join(args.versus)} {obpb:.4f} | ratio {obpb / bpb:.3f} "
            f"({abs(100 * (1 - obpb / bpb)):.1f}% {'lower' if obpb < bpb else 'higher'})"
        )


def prepare_tokens(text: Path, work: Path, preset: str, vocab_size: int | None) -> Path:
    """nanoGPT's split of `text` (first 90% / last 10% by characters) tokenized by Kiln with the
    preset's tokenizer settings."""
    from kiln.components.common.config import load_config
    from kiln.components.tokenization import tokenize

    tok_cfg = load_config(preset).tokenizer
    if vocab_size:
        tok_cfg.vocab_size = vocab_size
    dataset = kiln_runs.split_dataset(text, work / "dataset")
    tokenize(dataset, work / "tokens", tok_cfg)
    return work / "tokens"


def held_out_chars_per_byte(text: Path, val_fraction: float = 0.1) -> float:
    """Characters per UTF-8 byte of the held-out split (the last 10% of the characters)."""
    data = text.read_text(encoding="utf-8")
    val = data[int(len(data) * (1 - val_fraction)) :]
    return len(val) / len(val.encode("utf-8"))


@dataclass
class Lane:
    """One Kiln configuration trained to a wall-clock budget: a preset plus overrides."""

    name: str
    preset: str
    sets: list[str] = field(default_factory=list)
    steps: int = 0  # train exactly this many steps, no wall-clock limit (0 = to the budget)

    def describe(self) -> str:
        return " ".join([f"--preset {self.preset}", *self.sets])

    def bits_per_byte(self, tokens: Path, budget: float, work: Path, tag: str = "") -> float:
        """Train for `budget` seconds (start-up included; the schedule fitted to 95% of it, the
        rest for the final validation and the export), score on the whole held-out split. With
        `steps`, train that many steps whatever they take."""
        from kiln.components.common.config import EvalConfig
        from kiln.components.evaluate import evaluate

        out = work / f"{self.name}{tag}"
        budget_sets = ["train.eval_every=0"]  # one validation, at the end
        if self.steps:
            budget_sets.append(f"train.max_steps={self.steps}")
        else:
            budget_sets += [
                "train.max_steps=1000000",
                f"train.time_limit_s={0.95 * budget:.1f}",
                "train.fit_to_time_limit=true",
            ]
        run = kiln_runs.train(tokens, out, [*self.sets, *budget_sets], preset=self.preset)
        report = evaluate(
            str(run.output / "model"), str(tokens), str(work / f"{self.name}{tag}-eval"),
            EvalConfig(max_tokens=0),
        )  # fmt: skip
        share = "" if self.steps else f" ({100 * run.wall_s / budget:.0f}% of the budget)"
        print(
            f"{self.name}{tag}: {last_step(run.output)} steps at {run.tokens_per_second:,.0f} tok/s "
            f"in {run.wall_s:.0f} s{share}, val loss {report['val_loss']:.4f} nats/token, val {report['bits_per_byte']:.4f} bits/byte over {report['val_bytes']:,} bytes",
            flush=True,
        )
        return report["bits_per_byte"]


def last_step(output: Path) -> int:
    from kiln.components.pretrain.runtime import read_train_log

    losses = read_train_log(output)
    return max(losses) if losses else 0


if __name__ == "__main__":
    main()
