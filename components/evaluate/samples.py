"""Generation samples from fixed prompts, seeded so the same model always writes the same text."""

from __future__ import annotations

from typing import Any

import torch

from kiln.components.common.config import EvalConfig

EOT = "<|endoftext|>"


@torch.no_grad()
def generate_samples(
    model: Any, tokenizer: Any, cfg: EvalConfig, device: torch.device | str = "cpu"
) -> list[dict[str, str]]:
    """Continue each of `cfg.prompts` with `cfg.sample_tokens` sampled tokens.

    One generator seeded with `cfg.seed` drives all prompts in order, so a rerun reproduces the
    samples exactly (on the same device). Generation stops early at `<|endoftext|>`.

    Args:
        model: a `kiln.components.pretrain.model.Llama` (has `generate`).
        tokenizer: a `tokenizers.Tokenizer` matching the model.
        cfg: the `eval` section (prompts, sample_tokens, temperature, top_k, seed).
        device: where the model runs.

    Returns:
        [{"prompt": ..., "completion": ..., "text": prompt + completion}, ...]
    """
    model.eval()
    eos = tokenizer.token_to_id(EOT)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    out = []
    for prompt in cfg.prompts:
        ids = tokenizer.encode(prompt).ids or [eos if eos is not None else 0]
        x = torch.tensor([ids], device=device)
        y = model.generate(
            x,
            cfg.sample_tokens,
            temperature=cfg.temperature,
            top_k=cfg.top_k or None,
            eos_id=eos,
            generator=gen,
        )
        new = [i for i in y[0, len(ids) :].tolist() if i != eos]
        completion = tokenizer.decode(new)
        out.append({"prompt": prompt, "completion": completion, "text": prompt + completion})
    return out
