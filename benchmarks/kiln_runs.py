"""Shared pieces of the pretraining benchmarks: data preparation and timed `kiln train` runs."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

KILN = [sys.executable, "-m", "kiln.pipelines.cli"]


@dataclass
class KilnRun:
    window_tok_s: list[float]
    wall_s: float
    output: Path

    @property
    def tokens_per_second(self) -> float:
        steady = self.window_tok_s[1:] or self.window_tok_s  # the first window includes warm-up
        return statistics.median(steady)


def char_level_tokens(nanogpt_data: Path, out: Path) -> Path:
    """nanoGPT's own char-level ids (train.bin/val.bin) as Kiln shards: identical data for both."""
    import numpy as np

    from kiln.components.tokenization.manifest import Manifest, ShardEntry, write_manifest
    from kiln.components.tokenization.shards import write_shard

    out.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split in ("train", "val"):
        ids = np.fromfile(nanogpt_data / f"{split}.bin", dtype=np.uint16)
        (out / split).mkdir(exist_ok=True)
        sha = write_shard(out / split / "000000.bin", ids, vocab_size=65)
        splits[split] = [ShardEntry(f"{split}/000000.bin", len(ids), sha)]
    write_manifest(out, Manifest(vocab_size=65, dtype="uint16", eot_id=0, splits=splits))
    return out


def split_dataset(text: Path, out: Path, val_fraction: float = 0.1) -> Path:
    """An ingest-format dataset dir holding the text's first 90% as train and last 10% as val."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = text.read_text()
    cut = int(len(data) * (1 - val_fraction))
    for split, part in (("train", data[:cut]), ("val", data[cut:])):
        (out / split).mkdir(parents=True, exist_ok=True)
        table = pa.table({"id": [f"{text.name}:{split}"], "text": [part], "source": [text.name]})
        pq.write_table(table, out / split / "part-00000.parquet")
    return out


def train_command(
    tokens: Path, output: Path, sets: list[str], workers: int = 0, preset: str = "tiny"
) -> list[str]:
    cmd = [*KILN, "train", "--tokens", str(tokens), "--output", str(output), "--preset", preset]
    cmd += [a for s in sets for a in ("--set", s)]
    return cmd + (["--workers", str(workers)] if workers else [])


def step_seconds(output: Path) -> list[float]:
    """Per-step wall-clock times from a run's train_log.jsonl (its records' end-of-step times)."""
    log = output / "train_log.jsonl"
    if not log.exists():
        return []
    ends = [json.loads(line)["time"] for line in log.read_text().splitlines() if line]
    return [b - a for a, b in zip(ends[:-1], ends[1:], strict=True)]


def lane(name: str, tokens: Path, output: Path, sets: list[str], workers: int = 0, env=None):
    """`kiln train` as an `interleave.Lane`: per-step times from its train_log.jsonl."""
    from interleave import Lane

    log = output / "train_log.jsonl"
    return Lane(
        name=name,
        cmd=train_command(tokens, output, sets, workers),
        cwd=Path(__file__).resolve().parents[1],
        env=env or {},
        log=output.with_suffix(".log"),
        ready=lambda: log.exists() and log.stat().st_size > 0,
        step_seconds=lambda: step_seconds(output),
    )


def train(
    tokens: Path,
    output: Path,
    sets: list[str],
    workers: int = 0,
    env: dict | None = None,
    preset: str = "tiny",
) -> KilnRun:
    """`kiln train` in a subprocess; returns tokens/s per log window and wall-clock."""
    cmd = train_command(tokens, output, sets, workers, preset)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"kiln train failed:\n{proc.stderr[-3000:]}")
    windows = [
        float(x.replace(",", ""))
        for x in re.findall(r"\| ([\d,]+) tok/s \|", proc.stdout + proc.stderr)
    ]
    return KilnRun(window_tok_s=windows, wall_s=wall, output=output)
