"""Datasheet figures of the GPUs Kiln knows: one table for the MFU meter and for `kiln plan`.

    gpu = GPUS["h100"]            # GPU(name='H100', peak_bf16=9.89e14, memory_gb=80)
    by_device_name("NVIDIA H100 80GB HBM3").peak_bf16

Peaks are dense bf16 tensor-core FLOP/s (no sparsity); memory is the HBM capacity in decimal GB.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GPU:
    name: str  # a substring of what `torch.cuda.get_device_name` reports
    peak_bf16: float  # dense bf16 FLOP/s
    memory_gb: float  # HBM, 1e9 bytes


# Ordered so that a more specific name matches first ("H100 NVL" before "H100", "L40S" before "L4").
GPUS: dict[str, GPU] = {
    "h200": GPU("H200", 989e12, 141),
    "gh200": GPU("GH200", 989e12, 96),
    "h100-nvl": GPU("H100 NVL", 835e12, 94),
    "h100-pcie": GPU("H100 PCIe", 756e12, 80),
    "h100": GPU("H100", 989e12, 80),
    "b200": GPU("B200", 2250e12, 180),
    "a100": GPU("A100", 312e12, 80),
    "a100-40gb": GPU("A100", 312e12, 40),
    "l40s": GPU("L40S", 362e12, 48),
    "a10g": GPU("A10G", 125e12, 24),
    "l4": GPU("L4", 121e12, 24),
    "rtx4090": GPU("RTX 4090", 165e12, 24),
}


def by_device_name(device_name: str) -> GPU | None:
    """The table's entry whose name occurs in a device name such as torch reports it."""
    return next((g for g in GPUS.values() if g.name in device_name), None)


def gpu_type(key: str) -> GPU:
    """The entry for a short name (`h100`); ValueError listing the known ones otherwise."""
    gpu = GPUS.get(key.lower())
    if gpu is None:
        raise ValueError(f"unknown GPU type {key!r}; known: {', '.join(GPUS)}")
    return gpu
