"""AdamW, learning-rate schedules, and the guarded optimizer step (clip, NaN/inf skip)."""

from __future__ import annotations

import math

import torch
from torch import nn

from kiln.components.common.config import OptimConfig


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (norm gains are left undecayed); fused where available."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    kwargs = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    try:
        return torch.optim.AdamW(groups, fused=device.type in ("cuda", "cpu"), **kwargs)
    except (RuntimeError, TypeError):  # e.g. a device or dtype the fused kernel lacks
        return torch.optim.AdamW(groups, **kwargs)


def lr_at(step: int, max_steps: int, cfg: OptimConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then the chosen schedule."""
    peak, floor = cfg.lr, cfg.lr * cfg.min_lr_ratio
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return peak
    if cfg.schedule == "wsd":  # warmup, stable at peak, then a linear decay over the last fraction
        decay_start = max(cfg.warmup_steps, int(max_steps * (1 - cfg.wsd_decay_frac)))
        if step < decay_start:
            return peak
        progress = (step - decay_start) / max(1, max_steps - decay_start)
        return peak + (floor - peak) * min(1.0, progress)
    progress = (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def guarded_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float, loss: torch.Tensor
) -> tuple[float, bool]:
    """Clip and step unless the loss or gradient norm is NaN/inf.

    Returns (grad norm, stepped). A non-finite step leaves weights and optimizer state untouched:
    gradients are dropped and `optimizer.step()` is not called. Every rank reaches the same decision
    because gradients (DDP, FSDP) and the loss passed in are already reduced across ranks.
    """
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):  # FSDP2 returns a DTensor
        norm = norm.full_tensor()
    finite = bool(torch.isfinite(norm) & torch.isfinite(loss))
    if finite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm), finite
