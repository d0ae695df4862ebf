"""Throughput, MFU and the training progress line.

MFU = achieved model FLOP/s ÷ peak FLOP/s. Model FLOPs per token follow PaLM (appendix B):
6·N + 12·L·H·Q·T. The peak is the datasheet dense bf16 figure of the GPU. A CPU has no such
figure, and a short measured matmul rate is no ceiling (MFU against one swung far past 100% for
the same model), so on CPU there is no MFU: the progress line and the tracker show tokens/s.
"""

from __future__ import annotations

import functools
import math
import sys

import torch

from kiln.components.common.gpus import by_device_name


@functools.cache
def peak_flops(device_type: str, device_index: int = 0) -> float | None:
    """Peak FLOP/s of the device training runs on; None on CPU (no meaningful peak)."""
    if device_type != "cuda":
        return None
    gpu = by_device_name(torch.cuda.get_device_name(device_index))
    if gpu is not None:
        return gpu.peak_bf16
    return 312e12  # unknown GPU: assume A100-class rather than report nonsense


def mfu(tokens_per_sec: float, flops_per_token: float, peak: float | None, world: int = 1):
    """Model FLOPs utilization in [0, 1] against `world` devices of `peak`; None without a peak."""
    if not peak:
        return None
    return tokens_per_sec * flops_per_token / (peak * world)


def progress_text(
    step: int,
    total: int,
    loss: float,
    lr: float,
    grad_norm: float,
    tokens_per_sec: float,
    utilization: float | None,
    eta_seconds: float,
) -> str:
    """The training progress line (MFU only where there is a peak to measure it against)."""
    ppl = math.exp(min(loss, 50))
    mfu_part = f" | MFU {100 * utilization:.1f}%" if utilization is not None else ""
    return (
        f"step {step}/{total} | loss {loss:.4f} | ppl {ppl:.1f} | lr {lr:.2e} | "
        f"gnorm {grad_norm:.2f} | {tokens_per_sec:,.0f} tok/s{mfu_part} | "
        f"ETA {format_duration(eta_seconds)}"
    )


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressLine:
    """A live bar on a terminal (rewritten in place), nothing extra when output goes to a log."""

    def __init__(self, total: int, stream=None, enabled: bool = True):
        self.total, self.stream = total, stream or sys.stderr
        self.live = enabled and self.stream.isatty()

    def update(self, step: int, text: str) -> None:
        if not self.live:
            return
        width = 24
        filled = int(width * step / max(1, self.total))
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}\033[K")
        self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
