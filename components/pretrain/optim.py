"""Optimizers (AdamW; Muon for hidden matrices), learning-rate schedules, and the guarded step
(clip, NaN/inf skip).

    optimizers = build_optimizers(model, cfg.optim, device)      # [AdamW] or [Muon, AdamW]
    set_lr(optimizers, lr_at(step, max_steps, cfg.optim), cfg.optim)
    norm, stepped = guarded_step(model, optimizers, cfg.optim.grad_clip, loss)

Muon's peak is optim.muon_lr (default: optim.lr), AdamW's optim.lr (the token embedding's
optim.embedding_lr when set); the schedule scales every peak by the same factor, so they warm up
and decay together.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kiln.components.common.config import OptimConfig

EMBEDDING = "embed_tokens.weight"  # with tie_embeddings also the output head


def muon_params(model: nn.Module) -> set[str]:
    """Names of the parameters Muon updates: the blocks' 2-D weights. Embeddings, the output
    head and norm gains stay with AdamW (Muon's orthogonalization suits hidden matrices only)."""
    return {
        name
        for name, p in model.named_parameters()
        if p.requires_grad and p.ndim == 2 and name.startswith("layers.")
    }


def _adamw(groups: list[dict], cfg: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    kwargs = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    try:
        return torch.optim.AdamW(groups, fused=device.type in ("cuda", "cpu"), **kwargs)
    except (RuntimeError, TypeError):  # e.g. a device or dtype the fused kernel lacks
        return torch.optim.AdamW(groups, **kwargs)


def build_optimizers(
    model: nn.Module, cfg: OptimConfig, device: torch.device
) -> list[torch.optim.Optimizer]:
    """[AdamW], or with optim.name=muon [Muon (hidden matrices), AdamW (the rest)].

    AdamW decays matrices only (norm gains are left undecayed); with optim.embedding_lr the token
    embedding is a group of its own, tagged `role: embedding`, at that peak. Muon
    (torch.optim.Muon) scales its update to AdamW's RMS (`adjust_lr_fn="match_rms_adamw"`),
    decays its matrices by optim.weight_decay, and keeps one momentum buffer per matrix (saved in
    checkpoints).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    hidden = muon_params(model) if cfg.name == "muon" else set()
    own = {EMBEDDING} if cfg.embedding_lr else set()  # a group of its own, at its own peak
    decay = [p for n, p in named if p.ndim >= 2 and n not in hidden | own]
    no_decay = [p for n, p in named if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups += [
        {"params": [p], "weight_decay": cfg.weight_decay, "role": "embedding"}
        for n, p in named
        if n in own
    ]
    adamw = _adamw(groups, cfg, device)
    if not hidden:
        return [adamw]
    muon = torch.optim.Muon(
        [p for n, p in named if n in hidden],
        lr=cfg.muon_lr or cfg.lr,
        weight_decay=cfg.weight_decay,
        momentum=cfg.muon_momentum,
        nesterov=True,
        adjust_lr_fn="match_rms_adamw",
    )
    return [muon, adamw]


def lr_at(step: int, max_steps: int, cfg: OptimConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then the chosen schedule."""
    peak, floor = cfg.lr, cfg.lr * cfg.min_lr_ratio
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return peak
    if cfg.schedule == "wsd":  # warmup, stable at peak, then a linear decay over the last fraction
        decay_start = wsd_decay_start(max_steps, cfg)
        if step < decay_start:
            return peak
        progress = (step - decay_start) / max(1, max_steps - decay_start)
        return peak + (floor - peak) * min(1.0, progress)
    progress = (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def wsd_decay_start(max_steps: int, cfg: OptimConfig) -> int:
    """The step where the wsd schedule leaves its peak."""
    return max(cfg.warmup_steps, int(max_steps * (1 - cfg.wsd_decay_frac)))


def set_lr(optimizers: list[torch.optim.Optimizer], lr: float, cfg: OptimConfig) -> None:
    """Set each optimizer to its own peak × (lr / optim.lr): one schedule for all of them."""
    scale = lr / cfg.lr
    for optimizer in optimizers:
        peak = (cfg.muon_lr or cfg.lr) if isinstance(optimizer, torch.optim.Muon) else cfg.lr
        for group in optimizer.param_groups:
            own = cfg.embedding_lr if group.get("role") == "embedding" else 0.0
            group["lr"] = (own or peak) * scale


def guarded_step(
    model: nn.Module,
    optimizers: list[torch.optim.Optimizer],
    grad_clip: float,
    loss: torch.Tensor,
) -> tuple[float, bool]:
    """Clip and step unless the loss or gradient norm is NaN/inf.

    Returns (grad norm, stepped). A non-finite step leaves weights and optimizer state untouched:
    gradients are dropped and no optimizer steps. Every rank reaches the same decision
    because gradients (DDP, FSDP) and the loss passed in are already reduced across ranks.
    """
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):  # FSDP2 returns a DTensor
        norm = norm.full_tensor()
    finite = bool(torch.isfinite(norm) & torch.isfinite(loss))
    for optimizer in optimizers:
        if finite:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return float(norm), finite
