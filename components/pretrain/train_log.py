"""`train_log.jsonl`: one JSON record per optimizer step, written by rank 0: the run's history.

    {"step": 12, "loss": 5.31, "grad_norm": 0.82, "lr": 0.003, "skipped": false,
     "skipped_steps": 0, "rollbacks": 0, "time": 1764640000.1,
     "tokens_per_sec": 15365.0, "mfu": 0.41,          # at log steps (mfu on GPUs only)
     "val_loss": 5.20, "val_bits_per_byte": 2.31}     # at evaluation steps

Steps are strictly increasing: a run that resumes from a checkpoint (or rolls back to one after a
loss spike) first cuts the log back to that checkpoint's step (`truncate`), so the loss curve
never goes back in time. `step_metrics` names a record's values as they are tracked (MLflow);
`plot_curve` draws the loss with validation points and the learning rate.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TRAIN_LOG = "train_log.jsonl"

# record field → tracked metric name
METRIC_NAMES = {
    "loss": "train/loss",
    "lr": "train/lr",
    "grad_norm": "train/grad_norm",
    "tokens_per_sec": "train/tokens_per_sec",
    "mfu": "train/mfu",
    "skipped_steps": "train/skipped_steps",
    "rollbacks": "train/rollbacks",
    "val_loss": "val/loss",
    "val_bits_per_byte": "val/bits_per_byte",
}


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one step's record."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of `path` in step order ([] when it does not exist).

    A log written before resumes truncated it can hold a step twice: the last record wins.
    """
    path = Path(path)
    if not path.exists():
        return []
    by_step: dict[int, dict[str, Any]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            by_step[int(rec["step"])] = rec
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{n}: expected a JSON record with a step") from e
    return [by_step[s] for s in sorted(by_step)]


def read_train_log(output_dir: str | Path) -> dict[int, float]:
    """Per-step losses from `output_dir/train_log.jsonl`."""
    return {int(r["step"]): r["loss"] for r in read_records(Path(output_dir) / TRAIN_LOG)}


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def truncate(path: Path, step: int) -> int:
    """Drop the records after `step` (a resume point), atomically; returns how many were dropped.

    The kept lines go to a temp file beside the log, renamed over it: a crash leaves the old log
    or the new one, never half of one.
    """
    if not path.exists():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if (s := _step_of(line)) is not None and s <= step]
    dropped = len(lines) - len(kept)  # later steps, and a line torn by a crash
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
    return dropped


def step_metrics(record: dict[str, Any]) -> dict[str, float]:
    """A record's values under their tracked names (plus `train/perplexity`)."""
    out = {METRIC_NAMES[k]: float(v) for k, v in record.items() if k in METRIC_NAMES}
    if "loss" in record and math.isfinite(record["loss"]):
        out["train/perplexity"] = math.exp(min(record["loss"], 50))
    return out


def plot_curve(train_log: str | Path, out_png: str | Path) -> Path | None:
    """Training loss per step, validation loss points and the learning rate, as a PNG.

    Returns None when there is no log or matplotlib is missing (the metrics stay the record).
    """
    records = read_records(train_log)
    if not records:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display in pods and CI
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no loss-curve PNG")
        return None
    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, [r["loss"] for r in records], linewidth=1.2, label="train loss")
    val = [r for r in records if r.get("val_loss") is not None]
    if val:
        ax.plot(
            [r["step"] for r in val],
            [r["val_loss"] for r in val],
            "o-",
            color="tab:orange",
            markersize=4,
            label="val loss",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("Kiln pretraining")
    ax.grid(alpha=0.3)
    lines, labels = ax.get_legend_handles_labels()
    lr = [r for r in records if r.get("lr") is not None]
    if lr:
        ax_lr = ax.twinx()  # the schedule explains the curve's bends
        (line,) = ax_lr.plot(
            [r["step"] for r in lr], [r["lr"] for r in lr], color="tab:gray", linewidth=0.8
        )
        ax_lr.set_ylabel("learning rate")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        lines, labels = [*lines, line], [*labels, "learning rate"]
    ax.legend(lines, labels, loc="upper right")
    fig.tight_layout()
    fig.savefig(out_png, format="png")
    plt.close(fig)
    return Path(out_png)
