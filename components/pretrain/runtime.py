"""What differs between a plain process and a Ray Train worker, and what a run returns.

`Runtime` is a plain single process; `ray_launch.RayRuntime` overrides where checkpoints go and
come from. `train_log.jsonl` (rank 0, see `train_log.py`) holds every step's loss, the record
exact-resume checks use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from kiln.components.pretrain import checkpoint as ckpt
from kiln.components.pretrain.train_log import TRAIN_LOG, read_train_log

__all__ = ["TRAIN_LOG", "NonFiniteError", "Runtime", "Tracker", "TrainResult", "read_train_log"]


class NonFiniteError(RuntimeError):
    """Training produced NaN/inf loss or gradients too many steps in a row."""


class Tracker(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...


@dataclass
class Runtime:
    """A plain single process: checkpoints under `output_dir/checkpoints`, resume from the latest."""

    output_dir: Path
    resume: bool = True
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # rank among the workers of this node (who downloads shared inputs)
    device: torch.device = field(
        default_factory=lambda: torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )

    @property
    def checkpoint_root(self) -> Path:
        return Path(self.output_dir) / "checkpoints"

    @contextlib.contextmanager
    def restore(self) -> Iterator[Path | None]:
        yield ckpt.latest_checkpoint(self.checkpoint_root) if self.resume else None

    def save(self, step: int, writer, metrics: dict[str, float], keep: int) -> None:
        if self.rank == 0:
            ckpt.save_atomic(self.checkpoint_root, step, writer, keep)


@dataclass
class TrainResult:
    step: int
    losses: dict[int, float]
    val_loss: float | None
    checkpoint: str | None
    samples: list[str]
    skipped_steps: int
    rollbacks: int
    tokens_per_second: float
