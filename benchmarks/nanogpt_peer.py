"""Run Karpathy's nanoGPT beside Kiln on this machine (the peer of the pretraining benchmarks).

nanoGPT is not vendored: point `--nanogpt DIR` (or `NANOGPT_DIR`) at a checkout of
github.com/karpathy/nanoGPT. Its character-level Shakespeare data is prepared from the local
`tinyshakespeare.txt` (its prepare.py only downloads when input.txt is missing), so nothing is
fetched at run time. Its own 90/10 split is the one Kiln's benchmark uses too.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SHARED_TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"

# nanoGPT README's CPU run: 4 layers, 4 heads, 128 wide, block 64, batch 12, no compile.
README_CPU_ARGS = [
    "config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
    "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
    "--n_embd=128", "--dropout=0.0",
]  # fmt: skip


@dataclass
class PeerRun:
    val_losses: list[tuple[int, float]]
    wall_s: float


def argument_parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's parser with the peer options every nanoGPT comparison takes."""
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--nanogpt", help="nanoGPT checkout (default: $NANOGPT_DIR)")
    ap.add_argument(
        "--text", help="tinyshakespeare.txt (default: ../shared/data/tinyshakespeare.txt)"
    )
    return ap


def locate(arg: str | None) -> Path:
    path = Path(arg or os.environ.get("NANOGPT_DIR", ""))
    if not (path / "train.py").exists():
        sys.exit(
            "nanoGPT checkout not found: pass --nanogpt DIR or set NANOGPT_DIR (a clone of karpathy/nanoGPT)"
        )
    return path


def text_file(arg: str | None) -> Path:
    path = Path(arg) if arg else SHARED_TEXT
    if not path.exists():
        sys.exit(f"{path} not found: pass --text PATH to tinyshakespeare.txt")
    return path


def prepare(nanogpt: Path, text: Path) -> None:
    data = nanogpt / "data" / "shakespeare_char"
    shutil.copyfile(text, data / "input.txt")
    subprocess.run([sys.executable, "prepare.py"], cwd=data, check=True, capture_output=True)


ITER_LINE = re.compile(r"^iter \d+: loss [\d.]+, time ([\d.]+)ms", re.M)


def command(nanogpt: Path, extra: list[str], out_dir: Path) -> list[str]:
    """nanoGPT's train.py with the README CPU config plus `extra`."""
    return [sys.executable, "train.py", *README_CPU_ARGS, f"--out_dir={out_dir}", *extra]


def lane(nanogpt: Path, extra: list[str], out_dir: Path, log: Path):
    """train.py as an `interleave.Lane`: per-iteration times from its own log lines."""
    from interleave import Lane

    def read() -> str:
        return log.read_text() if log.exists() else ""

    return Lane(
        name="nanoGPT",
        cmd=command(nanogpt, extra, out_dir),
        cwd=nanogpt,
        log=log,
        ready=lambda: "iter 1:" in read(),
        step_seconds=lambda: [float(ms) / 1000 for ms in ITER_LINE.findall(read())],
    )


def run(nanogpt: Path, extra: list[str], out_dir: Path) -> PeerRun:
    """Run nanoGPT's train.py with the README CPU config plus `extra`; parse its log."""
    cmd = command(nanogpt, extra, out_dir)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=nanogpt, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"nanoGPT failed:\n{proc.stderr[-3000:]}")
    vals = [
        (int(s), float(v))
        for s, v in re.findall(
            r"^step (\d+): train loss [\d.]+, val loss ([\d.]+)", proc.stdout, re.M
        )
    ]
    return PeerRun(val_losses=vals, wall_s=wall)
