"""Evaluate a fine-tuned chat model against its base on the held-out conversations.

    report = evaluate_chat("out/sft/model", "out/chat_tokens", cfg, "out/eval")

Each held-out conversation is scored on its own (no packing, so no other conversation in the
context), on assistant tokens only: the mean cross-entropy (nats/token), perplexity and bits per
byte of the assistant text. The base model (its weights with the chat markers added, as training
started) is scored on exactly the same tokens. The gate (`evaluate.gate.gate_verdict` with the
base as its baseline) passes only when the fine-tuned model's loss is below the base's by
`eval.baseline_margin`. Samples answer `eval.prompts` through the chat template.

`eval.json` has the fields of a pretraining evaluation (`kiln_eval`, `val_loss`, `perplexity`,
`bits_per_byte`, `metrics`, `gate`, `samples`, digests) so that publish treats both alike, plus
`kind: "sft"` and `base_model` (its URI and registered version).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from kiln.components.common.config import Config, ModelConfig
from kiln.components.evaluate.gate import gate_verdict
from kiln.components.evaluate.metrics import token_byte_lengths
from kiln.components.pretrain.export import import_hf
from kiln.components.pretrain.model import Llama
from kiln.components.sft.data import IGNORE, ChatSplit, read_manifest
from kiln.components.sft.prepare import base_state
from kiln.components.sft.template import ChatIds, render_prompt

log = logging.getLogger("kiln.sft")
EVAL_JSON = "eval.json"


def base_model(chat_dir: str | Path) -> Llama:
    """The base model as fine-tuning started from it (chat markers added)."""
    manifest = read_manifest(chat_dir)
    cfg = ModelConfig(**manifest["base"]["model"])
    model = Llama(cfg)
    model.load_state_dict(base_state(chat_dir, cfg.tie_embeddings))
    return model.eval()


@torch.no_grad()
def assistant_loss(
    model: Llama, split: ChatSplit, byte_lengths: torch.Tensor, batch_size: int = 8
) -> dict[str, float]:
    """Loss on the assistant tokens of every conversation in `split`, each scored alone."""
    limit = model.cfg.max_seq_len + 1
    nats = tokens = n_bytes = 0.0
    for start in range(0, len(split), batch_size):
        convs = [split.conversation(i) for i in range(start, min(start + batch_size, len(split)))]
        width = max(min(len(ids), limit) for ids, _ in convs)
        ids = torch.zeros(len(convs), width, dtype=torch.long)
        targets = torch.full((len(convs), width), IGNORE, dtype=torch.long)
        for row, (conv_ids, conv_mask) in enumerate(convs):
            n = min(len(conv_ids), limit)
            ids[row, :n] = torch.from_numpy(conv_ids[:n].astype("int64"))
            keep = torch.from_numpy(conv_mask[:n].astype(bool))
            targets[row, :n] = ids[row, :n].masked_fill(~keep, IGNORE)
        logits = model(ids[:, :-1]).float()
        y = targets[:, 1:]
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            y.reshape(-1),
            ignore_index=IGNORE,
            reduction="sum",
        )
        counted = y != IGNORE
        nats += float(loss)
        tokens += float(counted.sum())
        n_bytes += float((byte_lengths[y.clamp(min=0)] * counted).sum())
    if not tokens:
        raise ValueError("the held-out conversations have no assistant tokens to score")
    mean = nats / tokens
    return {
        "val_loss": mean,
        "perplexity": math.exp(min(mean, 50)),
        "bits_per_byte": nats / math.log(2) / n_bytes if n_bytes else float("nan"),
        "tokens": tokens,
        "bytes": n_bytes,
    }


@torch.no_grad()
def answers(
    model: Llama, tok: Tokenizer, ids: ChatIds, prompts: list[str], cfg: Config
) -> list[dict[str, str]]:
    """The model's answer to each prompt, asked as a user turn through the chat template."""
    gen = torch.Generator().manual_seed(cfg.eval.seed)
    out = []
    for prompt in prompts:
        messages = [{"role": "user", "content": prompt}]
        if cfg.sft.system_prompt:
            messages.insert(0, {"role": "system", "content": cfg.sft.system_prompt})
        x = torch.tensor([render_prompt(tok, messages, ids)])
        y = model.generate(
            x,
            cfg.eval.sample_tokens,
            temperature=cfg.eval.temperature,
            top_k=cfg.eval.top_k or None,
            eos_id=ids.end,
            generator=gen,
        )
        out.append({"prompt": prompt, "answer": tok.decode(y[0, x.shape[1] :].tolist())})
    return out


def evaluate_chat(
    model_dir: str | Path, chat_dir: str | Path, cfg: Config, out_dir: str | Path
) -> dict[str, Any]:
    """Score the fine-tuned model and its base; write and return `eval.json` (module doc)."""
    chat_dir, out = Path(chat_dir), Path(out_dir)
    manifest = read_manifest(chat_dir)
    val = ChatSplit.load(chat_dir, "val")
    if not len(val):
        raise ValueError(
            f"{chat_dir} holds no held-out conversations: set sft.val_fraction > 0 to evaluate"
        )
    tok_file = chat_dir / "tokenizer.json"
    tok = Tokenizer.from_file(str(tok_file))
    model = import_hf(model_dir).eval()
    lengths = torch.from_numpy(token_byte_lengths(tok_file, model.cfg.vocab_size))
    sft = assistant_loss(model, val, lengths, cfg.eval.batch_size)
    base = assistant_loss(base_model(chat_dir), val, lengths, cfg.eval.batch_size)
    metrics = {
        **{k: sft[k] for k in ("val_loss", "perplexity", "bits_per_byte")},
        "baseline_val_loss": base["val_loss"],
        "baseline_bits_per_byte": base["bits_per_byte"],
        "val_loss_improvement": base["val_loss"] - sft["val_loss"],
        "assistant_tokens": sft["tokens"],
    }
    ids = ChatIds(**manifest["chat_ids"])
    samples = answers(model, tok, ids, cfg.eval.prompts, cfg) if cfg.eval.sample_tokens else []
    report = {
        "kiln_eval": 1,
        "kind": "sft",
        "model_dir": str(model_dir),
        "tokens_dir": str(chat_dir),
        **{k: sft[k] for k in ("val_loss", "perplexity", "bits_per_byte")},
        "metrics": metrics,
        "baseline": base,
        "base_model": manifest["base"]["uri"],
        "base_registered": manifest["base"].get("registered", {}),
        "val_set_digest": manifest["files"]["val.ids.npy"],
        "dataset_digest": manifest.get("conversations_digest", ""),
        "tokenizer_sha256": hashlib.sha256(tok_file.read_bytes()).hexdigest(),
        "samples": samples,
        "gate": gate_verdict(sft, cfg.eval, base),
        "config": dataclasses.asdict(cfg.eval),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / EVAL_JSON).write_text(json.dumps(report, indent=2))
    log.info(
        "sft eval: assistant loss %.4f (base %.4f, %+.4f), %.3f bits/byte; gate %s",
        sft["val_loss"],
        base["val_loss"],
        base["val_loss"] - sft["val_loss"],
        sft["bits_per_byte"],
        "passed" if report["gate"]["passed"] else "failed",
    )
    return report
