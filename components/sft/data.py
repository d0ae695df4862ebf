"""Rendered conversations on disk and the loader that packs them into training batches.

A chat tokens directory (the conversations → sft contract; `write_split` writes one split):

    chat_tokens/
      manifest.json          format kiln-chat-tokens, vocab, chat ids, base model, sha256 per file
      tokenizer.json         the base tokenizer plus the chat markers
      base.safetensors       the base weights, vocabulary resized for the markers (our names)
      train.ids.npy  train.mask.npy  train.offsets.npy   (uint32 ids, uint8 mask, int64 bounds)
      val.ids.npy    val.mask.npy    val.offsets.npy

`ChatLoader` packs whole conversations, in a seeded order per epoch, into rows of `seq_len + 1`
tokens (a conversation longer than that is cut), pads the rest with `<|endoftext|>`, and yields
(inputs, targets) with target -100 wherever the mask is 0: only assistant tokens are learned.
Conversations sharing a row see the earlier ones in their context, as documents do in
pretraining. Like `pretrain.data.TokenLoader`, all ranks walk one global cursor `(epoch, row)`
and rank r takes the r-th block of each global batch, so a checkpoint restores every rank.

    loader = ChatLoader(ChatSplit.load(dir, "train"), seq_len=256, batch_size=8, seed=1)
    x, y = loader.next_batch()          # (8, 256) int64; y == -100 outside assistant turns
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kiln.components.common.storage import sha256_file
from kiln.components.pretrain.data import IGNORE
from kiln.components.sft.template import Rendered

__all__ = ["IGNORE", "ChatLoader", "ChatSplit", "is_chat_tokens", "read_manifest", "write_split"]

log = logging.getLogger("kiln.sft")
FORMAT = "kiln-chat-tokens"
MANIFEST = "manifest.json"


def is_chat_tokens(directory: str | Path) -> bool:
    """Whether `directory` holds rendered conversations (not pretraining token shards)."""
    path = Path(directory) / MANIFEST
    return path.is_file() and json.loads(path.read_text()).get("format") == FORMAT


def read_manifest(directory: str | Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a chat tokens directory")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def write_split(directory: Path, split: str, rendered: list[Rendered]) -> dict[str, str]:
    """Write one split's arrays; returns {file name: sha256}."""
    lengths = np.array([len(r.ids) for r in rendered], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    arrays = {
        "ids": np.fromiter((i for r in rendered for i in r.ids), np.uint32, int(offsets[-1])),
        "mask": np.fromiter((m for r in rendered for m in r.mask), np.uint8, int(offsets[-1])),
        "offsets": offsets,
    }
    files = {}
    for kind, array in arrays.items():
        path = directory / f"{split}.{kind}.npy"
        np.save(path, array, allow_pickle=False)
        files[path.name] = sha256_file(path)
    return files


@dataclass
class ChatSplit:
    """One split of rendered conversations, verified against the manifest."""

    ids: np.ndarray  # (tokens,) uint32
    mask: np.ndarray  # (tokens,) uint8
    offsets: np.ndarray  # (conversations + 1,) int64

    @classmethod
    def load(cls, directory: str | Path, split: str) -> ChatSplit:
        directory = Path(directory)
        manifest = read_manifest(directory)
        arrays = {}
        for kind in ("ids", "mask", "offsets"):
            path = directory / f"{split}.{kind}.npy"
            want = manifest["files"].get(path.name)
            if want is None or not path.is_file():
                raise FileNotFoundError(f"{path} is missing from the chat tokens directory")
            if sha256_file(path) != want:
                raise ValueError(f"{path}: sha256 differs from {directory / MANIFEST}")
            arrays[kind] = np.load(path, allow_pickle=False)
        vocab = manifest["vocab_size"]
        if len(arrays["ids"]) and int(arrays["ids"].max()) >= vocab:
            raise ValueError(f"{directory}/{split}.ids.npy holds ids >= vocab_size {vocab}")
        return cls(**arrays)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def conversation(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.ids[a:b], self.mask[a:b]

    @property
    def trained_tokens(self) -> int:
        return int(self.mask.sum())


class ChatLoader:
    """Packed rows of conversations with assistant-only targets; see the module docstring."""

    def __init__(
        self,
        split: ChatSplit,
        seq_len: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        pad_id: int = 0,
    ):
        if len(split) == 0:
            raise ValueError("no conversations to train on")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.split, self.seq_len, self.batch_size = split, seq_len, batch_size
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle, self.pad_id = seed, shuffle, pad_id
        lengths = np.diff(split.offsets)
        self.lengths = np.minimum(lengths, seq_len + 1)
        cut = int((lengths > seq_len + 1).sum())
        if cut and rank == 0:
            log.warning(
                "%d of %d conversations are longer than %d tokens: cut",
                cut,
                len(split),
                seq_len + 1,
            )
        self.epoch, self.row = 0, 0
        self._rows_key: int | None = None
        self._rows: list[np.ndarray] = []

    def rows(self, epoch: int) -> list[np.ndarray]:
        """Conversation indices of each packed row of `epoch` (computed once per epoch)."""
        if self._rows_key != epoch:
            n = len(self.split)
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(n) if self.shuffle else np.arange(n)
            rows, current, used = [], [], 0
            for i in order:
                length = int(self.lengths[i])
                if current and used + length > self.seq_len + 1:
                    rows.append(np.array(current))
                    current, used = [], 0
                current.append(int(i))
                used += length
            rows.append(np.array(current))
            self._rows_key, self._rows = epoch, rows
        return self._rows

    def row_tensors(self, conversations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, mask) of one packed row, (seq_len + 1,) each, padding masked out."""
        ids = np.full(self.seq_len + 1, self.pad_id, dtype=np.int64)
        mask = np.zeros(self.seq_len + 1, dtype=bool)
        at = 0
        for i in conversations:
            conv_ids, conv_mask = self.split.conversation(int(i))
            n = int(self.lengths[i])
            ids[at : at + n], mask[at : at + n] = conv_ids[:n], conv_mask[:n]
            at += n
        return ids, mask

    @staticmethod
    def pair(rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.from_numpy(np.stack([r[0] for r in rows]))
        mask = torch.from_numpy(np.stack([r[1] for r in rows]))
        targets = ids[:, 1:].masked_fill(~mask[:, 1:], IGNORE)
        return ids[:, :-1], targets

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's (inputs, targets), each (batch_size, seq_len) int64."""
        picked = []
        for _ in range(self.batch_size * self.world_size):
            rows = self.rows(self.epoch)
            picked.append(rows[self.row])
            self.row += 1
            if self.row == len(rows):
                self.epoch, self.row = self.epoch + 1, 0
        mine = picked[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        return self.pair([self.row_tensors(c) for c in mine])

    def epoch_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every row of epoch 0 once (evaluation): this rank's share, batch by batch; every
        rank yields the same number of batches (short ones padded with fully masked rows)."""
        rows = self.rows(0)
        per_step = self.batch_size * self.world_size
        empty = (np.full(self.seq_len + 1, self.pad_id, np.int64), np.zeros(self.seq_len + 1, bool))
        for start in range(0, len(rows), per_step):
            block = rows[start : start + per_step]
            mine = block[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
            tensors = [self.row_tensors(c) for c in mine]
            tensors += [empty] * (self.batch_size - len(tensors))
            yield self.pair(tensors)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "row": self.row}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.row = int(state["epoch"]), int(state["row"])
