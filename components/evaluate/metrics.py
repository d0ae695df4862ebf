"""Held-out metrics: validation loss, perplexity and bits per byte over the `val` token shards.

The val split is cut into consecutive windows of `seq_len + 1` tokens that overlap by one token,
so every token after the first of each shard is a target exactly once (no shuffling, no
sampling: the same shards always give the same numbers). For the N scored target tokens:

    val_loss      = Σ nats / N                      (mean cross-entropy, natural log)
    perplexity    = exp(val_loss)
    bits_per_byte = Σ nats / ln 2 / Σ bytes(target)
    unigram_loss  = −Σ_v p(v) ln p(v), p(v) = count(v) / N   (over the same N targets)

`unigram_loss` is the baseline of the model's own tokenizer: the loss of a model that knows the
exact frequency of every token in this held-out text but uses no context. It is measured in the
same unit on the same targets as val_loss, so a model that learned anything from context is
below it (the publish gate asks for a margin: `eval.unigram_margin`).

`bytes(id)` is the length in UTF-8 bytes of the text that token decodes to. For Kiln's byte-level
BPE every character of a token's vocabulary string stands for exactly one byte, so the count is
exact even for tokens that hold a fragment of a multi-byte character. Special tokens (the
`<|endoftext|>` document separator) decode to no text and count 0 bytes, but their nats still
count: predicting where a document ends is part of modelling the text. Bits per byte does not
depend on the tokenizer, so it compares models with different vocabularies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kiln.components.tokenization.engine import byte_decoder
from kiln.components.tokenization.shards import open_shard


@dataclass
class HeldOut:
    """What one pass over the held-out tokens measured."""

    val_loss: float
    perplexity: float
    bits_per_byte: float
    tokens: int  # target tokens scored
    bytes: int  # UTF-8 bytes those targets decode to
    unigram_loss: float  # entropy of those targets' unigram distribution, nats/token

    def to_dict(self) -> dict[str, float | int]:
        return {
            "val_loss": self.val_loss,
            "perplexity": self.perplexity,
            "bits_per_byte": self.bits_per_byte,
            "val_tokens": self.tokens,
            "val_bytes": self.bytes,
            "unigram_loss": self.unigram_loss,
        }


def token_byte_lengths(tokenizer_json: str | Path, vocab_size: int) -> np.ndarray:
    """UTF-8 bytes each token id decodes to, as an int64 array of `vocab_size` entries.

    Byte-level BPE vocabularies are counted character by character (one character = one byte);
    other tokenizers are decoded id by id. Special tokens and ids beyond the tokenizer's
    vocabulary (model padding) count 0.
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    specials = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
    byte_level = "ByteLevel" in str(tok.decoder)
    table = byte_decoder()
    lengths = np.zeros(vocab_size, dtype=np.int64)
    for piece, idx in tok.get_vocab(with_added_tokens=True).items():
        if idx >= vocab_size or piece in specials:
            continue
        if byte_level and all(c in table for c in piece):
            lengths[idx] = len(piece)
        else:
            lengths[idx] = len(tok.decode([idx], skip_special_tokens=False).encode("utf-8"))
    return lengths


def _windows(paths: list[Path], seq_len: int, max_tokens: int):
    """Yield (seq_len + 1)-token windows overlapping by one, in shard order, until `max_tokens`
    targets were produced (0 = no limit). The last window of a shard may be shorter."""
    produced = 0
    for path in paths:
        shard = open_shard(path)
        for start in range(0, max(0, len(shard) - 1), seq_len):
            window = np.asarray(shard[start : start + seq_len + 1], dtype=np.int64)
            if max_tokens:
                window = window[: max_tokens - produced + 1]
            if len(window) < 2:
                return
            yield window
            produced += len(window) - 1
            if max_tokens and produced >= max_tokens:
                return


@torch.no_grad()
def held_out_metrics(
    model: torch.nn.Module,
    shard_files: list[Path],
    byte_lengths: np.ndarray,
    seq_len: int,
    batch_size: int = 8,
    max_tokens: int = 0,
    device: torch.device | str = "cpu",
) -> HeldOut:
    """Score every target token of `shard_files` (up to `max_tokens`) with `model`.

    Args:
        model: maps (B, T) ids to (B, T, vocab) logits.
        shard_files: token shards of the held-out split, in a fixed order.
        byte_lengths: from `token_byte_lengths`, indexed by token id.
        seq_len: context per window (at most the model's max_seq_len).
        batch_size: windows per forward pass.
        max_tokens: stop after this many targets (0 = all).
        device: where the model runs.

    Raises:
        ValueError: when the shards hold no target token, or ids exceed the model vocabulary.
    """
    model.eval()
    nats = 0.0
    n_tokens = n_bytes = 0
    counts = np.zeros(len(byte_lengths), dtype=np.int64)  # occurrences of each target id
    batch: list[np.ndarray] = []

    def flush() -> None:
        nonlocal nats, n_tokens, n_bytes
        width = max(len(w) for w in batch)
        ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width - 1), dtype=bool)
        for i, w in enumerate(batch):
            ids[i, : len(w)] = w
            mask[i, : len(w) - 1] = True
        if ids.max() >= len(byte_lengths):
            raise ValueError(
                f"token id {int(ids.max())} is outside the model vocabulary ({len(byte_lengths)})"
            )
        x = torch.from_numpy(ids[:, :-1]).to(device)  # (B, T)
        y = torch.from_numpy(ids[:, 1:]).to(device)  # (B, T)
        logits = model(x).float()  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        m = torch.from_numpy(mask.reshape(-1)).to(device)
        nats += float(loss[m].double().sum())
        n_tokens += int(mask.sum())
        targets = ids[:, 1:][mask]
        n_bytes += int(byte_lengths[targets].sum())
        np.add(counts, np.bincount(targets, minlength=len(counts)), out=counts)
        batch.clear()

    for window in _windows(shard_files, seq_len, max_tokens):
        batch.append(window)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if n_tokens == 0:
        raise ValueError(f"no held-out tokens to score in {[str(p) for p in shard_files]}")
    loss = nats / n_tokens
    bpb = nats / math.log(2) / n_bytes if n_bytes else float("inf")
    return HeldOut(
        loss, math.exp(min(loss, 700.0)), bpb, n_tokens, n_bytes, unigram_entropy(counts)
    )


def unigram_entropy(counts: np.ndarray) -> float:
    """Entropy in nats of the distribution `counts` / Σ counts (0 × ln 0 counts as 0)."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())
