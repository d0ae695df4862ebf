"""Fixtures for pretraining tests: a tiny tokenized corpus made in-process (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from kiln.components.common.config import load_config
from kiln.components.tokenization.manifest import Manifest, ShardEntry, write_manifest
from kiln.components.tokenization.shards import write_shard


def corpus_text() -> str:
    """Real English text present on every Python install: the language reference topics."""
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    return "\n\n".join(topics[k] for k in sorted(topics))[:200_000]


def make_tokens_dir(root: Path, vocab_size: int = 320, val_fraction: float = 0.1) -> Path:
    text = corpus_text()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([text], trainer)
    root.mkdir(parents=True, exist_ok=True)
    tok.save(str(root / "tokenizer.json"))
    ids = np.array(tok.encode(text).ids, dtype=np.int64)
    cut = int(len(ids) * (1 - val_fraction))
    splits = {}
    for split, part in [("train", ids[:cut]), ("val", ids[cut:])]:
        (root / split).mkdir(exist_ok=True)
        sha = write_shard(root / split / "000000.bin", part, vocab_size=tok.get_vocab_size())
        splits[split] = [ShardEntry(file=f"{split}/000000.bin", tokens=len(part), sha256=sha)]
    write_manifest(
        root, Manifest(vocab_size=tok.get_vocab_size(), dtype="uint16", eot_id=0, splits=splits)
    )
    return root


@pytest.fixture(scope="session")
def tokens_dir(tmp_path_factory) -> Path:
    return make_tokens_dir(tmp_path_factory.mktemp("tokens"))


@pytest.fixture
def tiny_cfg():
    """A model that trains a step in milliseconds on one CPU core."""
    return load_config(
        "tiny",
        overrides=[
            "model.dim=32",
            "model.n_layers=2",
            "model.n_heads=4",
            "model.n_kv_heads=2",
            "data.seq_len=32",
            "train.micro_batch_size=4",
            "train.max_steps=20",
            "train.log_every=5",
            "train.eval_every=10",
            "train.eval_batches=2",
            "train.ckpt_every=10",
            "train.sample_tokens=8",
            "optim.warmup_steps=5",
        ],
    )
