"""Throughput, MFU and the training progress line.

MFU = achieved model FLOP/s ÷ peak FLOP/s. Model FLOPs per token follow PaLM (appendix B):
6·N + 12·L·H·Q·T. The peak is the datasheet dense bf16 figure for a known GPU, or, on CPU, a
measured fp32 matmul rate of this machine (so CPU MFU says how well we use the cores we have).
"""

from __future__ import annotations

import functools
import sys
import time

import torch

# Dense bf16 tensor-core peaks (FLOP/s), from the vendors' datasheets.
GPU_PEAK_BF16 = {
    "H200": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "A10G": 125e12,
    "L40S": 362e12,
    "L4": 121e12,
    "RTX 4090": 165e12,
}


@functools.cache
def peak_flops(device_type: str, device_index: int = 0) -> float:
    """Peak FLOP/s of the device training runs on."""
    if device_type == "cuda":
        name = torch.cuda.get_device_name(device_index)
        for key, flops in GPU_PEAK_BF16.items():
            if key in name:
                return flops
        return 312e12  # unknown GPU: assume A100-class rather than report nonsense
    return measured_cpu_matmul_flops()


@functools.cache
def measured_cpu_matmul_flops(n: int = 512, seconds: float = 0.3) -> float:
    """fp32 matmul FLOP/s of this CPU with the current torch thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm up the kernels
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / elapsed


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
