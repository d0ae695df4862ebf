"""A light progress line (MB/s, tokens/s) for long stages, printed to stderr at most every 2 s."""

from __future__ import annotations

import sys
import time

# How every Kiln process formats its log records (the CLI, Ray Train workers, TrainJob nodes).
# `kiln run`'s console (pipelines/console.py) finds a training process's warnings by the
# "LEVEL logger: message" part.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Progress:
    """Counts bytes and items; prints rates while running and once more on close."""

    def __init__(self, label: str, unit: str = "tokens", every: float = 2.0, stream=None):
        self.label, self.unit, self.every = label, unit, every
        self.stream = stream or sys.stderr
        self.start = self.last = time.time()
        self.bytes = self.tokens = 0
        self.shown = False

    def update(self, nbytes: int, count: int) -> None:
        """Add `nbytes` input bytes and `count` items (tokens, documents)."""
        self.bytes += nbytes
        self.tokens += count
        now = time.time()
        if now - self.last >= self.every:
            self.last = now
            self._show("\r")

    def rates(self) -> tuple[float, float]:
        """(MB/s, items/s) so far."""
        dt = max(time.time() - self.start, 1e-9)
        return self.bytes / 1e6 / dt, self.tokens / dt

    def _show(self, end: str) -> None:
        mbs, per_s = self.rates()
        self.stream.write(
            f"{end}{self.label}: {self.bytes / 1e6:,.1f} MB, {self.tokens:,} {self.unit} "
            f"({mbs:.1f} MB/s, {per_s:,.0f} {self.unit}/s)"
        )
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        """Final line (only if a progress line was shown, to keep short runs quiet)."""
        if self.shown:
            self._show("\r")
            self.stream.write("\n")
