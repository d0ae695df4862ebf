"""Token-shard loader: memory-mapped, deterministic, rank-disjoint, resumable.

Each shard is cut into non-overlapping windows of `seq_len + 1` tokens (inputs and shifted
targets). An epoch visits every window of every shard once; with `shuffle` the shard order and the
window order inside each shard are seeded permutations, and later epochs shift the window grid by a
seeded offset so the model does not see identical windows again.

Shards are verified before anything is read from them (`verify_shards`: size, sha256 from the
tokens directory's manifest.json, every id < vocab_size; once per shard per process), so a
corrupted or foreign shard stops training with the file named instead of training on garbage.

All ranks walk the same global cursor `(epoch, shard, offset)`. Each step consumes
`batch_size × world_size` consecutive windows of that walk and rank r takes the r-th block of
`batch_size`, so ranks never overlap and the cursor is identical everywhere: saving it once in a
checkpoint restores every rank exactly.

    loader = TokenLoader(paths, seq_len=256, batch_size=8, rank=0, world_size=2, seed=1)
    x, y = loader.next_batch()        # (8, 256) int64 each
    state = loader.state_dict()       # {"epoch": 0, "shard": 0, "offset": 16}
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from kiln.components.tokenization.manifest import verify_shards
from kiln.components.tokenization.shards import open_shard

IGNORE = -100  # a target that is not learned (F.cross_entropy's ignore_index)


class TokenLoader:
    """Batches of (inputs, targets) windows from token shards; see the module docstring.

    Args:
        paths: shard files, each inside a tokens directory with its `manifest.json`.
        seq_len, batch_size: window length and windows per rank per step.
        rank, world_size: this worker and how many share the cursor.
        seed, shuffle: shard and window order.
        verify: check the shards against their manifest first (ValueError naming the shard).
    """

    def __init__(
        self,
        paths: list[str | Path],
        seq_len: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        verify: bool = True,
    ):
        if not paths:
            raise ValueError("TokenLoader needs at least one token shard")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        if verify:
            verify_shards(paths)
        self.shards = [open_shard(p) for p in paths]
        self.paths = [str(p) for p in paths]
        self.seq_len, self.batch_size = seq_len, batch_size
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle = seed, shuffle
        total = sum(max(0, (len(s) - 1) // seq_len) for s in self.shards)
        if total < batch_size * world_size:
            raise ValueError(
                f"token shards hold {total} windows of {seq_len + 1} tokens, fewer than one global "
                f"batch ({batch_size} × {world_size} workers): use more data or a smaller seq_len/batch"
            )
        self.windows = total  # per epoch, all ranks together
        self.epoch, self.shard, self.offset = 0, 0, 0
        self._plan_key: tuple[int, int] | None = None
        self._plan: tuple[int, np.ndarray, int] = (0, np.zeros(0, dtype=np.int64), 0)

    # ------------------------------------------------------------------------------ epoch plans
    def _rng(self, *keys: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, *keys])

    def _shard_order(self, epoch: int) -> np.ndarray:
        n = len(self.shards)
        return self._rng(epoch).permutation(n) if self.shuffle else np.arange(n)

    def _windows(self, epoch: int, position: int) -> tuple[int, np.ndarray, int]:
        """(shard index, window order, grid shift) of the shard at `position` in this epoch's
        shard order; computed once per shard visit, not per window."""
        key = (epoch, position)
        if self._plan_key != key:
            shard = int(self._shard_order(epoch)[position])
            rng = self._rng(epoch, position, 1)
            shift = int(rng.integers(self.seq_len)) if self.shuffle and epoch > 0 else 0
            count = max(0, (len(self.shards[shard]) - shift - 1) // self.seq_len)
            order = rng.permutation(count) if self.shuffle else np.arange(count)
            self._plan_key, self._plan = key, (shard, order, shift)
        return self._plan

    def _next_window(self) -> tuple[int, int]:
        """(shard index, start token) of the next window; advances the cursor."""
        while True:
            shard, order, shift = self._windows(self.epoch, self.shard)
            if self.offset < len(order):
                start = shift + int(order[self.offset]) * self.seq_len
                self.offset += 1
                return shard, start
            self.offset, self.shard = 0, self.shard + 1
            if self.shard == len(self.shards):
                self.shard, self.epoch = 0, self.epoch + 1

    # ---------------------------------------------------------------------------------- batches
    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's (inputs, targets), each (batch_size, seq_len) int64."""
        windows = [self._next_window() for _ in range(self.batch_size * self.world_size)]
        mine = windows[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        rows = np.stack([self.shards[s][i : i + self.seq_len + 1] for s, i in mine]).astype(
            np.int64
        )
        batch = torch.from_numpy(rows)
        return batch[:, :-1], batch[:, 1:]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield self.next_batch()

    # ------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "shard": self.shard, "offset": self.offset}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, shard, offset = int(state["epoch"]), int(state["shard"]), int(state["offset"])
        if not 0 <= shard < len(self.shards):
            raise ValueError(
                f"loader state shard={shard} does not exist ({len(self.shards)} shards)"
            )
        self.epoch, self.shard, self.offset = epoch, shard, offset
