"""Fixtures for fine-tuning tests: a tiny base model and conversations, made in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kiln.components.common.config import ModelConfig, load_config
from kiln.components.pretrain.export import export_hf
from kiln.components.pretrain.model import Llama
from kiln.components.sft.conversations import conversations
from kiln.components.tokenization.bpe import train_bpe
from kiln.pipelines.corpus import builtin_conversations, help_topics


def make_base(root: Path, vocab: int = 384) -> Path:
    """A Hugging Face directory: a Kiln BPE tokenizer and a small randomly initialized model."""
    texts = [text for _, text in help_topics()][:200]
    tok = train_bpe(texts, vocab_size=vocab)
    root.mkdir(parents=True, exist_ok=True)
    tok.save(str(root.parent / "tokenizer.json"))
    cfg = ModelConfig(
        vocab_size=vocab, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=128
    )
    model = Llama(cfg)
    model.init_weights(seed=0)
    return export_hf(model.state_dict(), cfg, root, root.parent / "tokenizer.json")


def make_conversations(root: Path, n: int = 240) -> Path:
    src = root.parent / f"{root.name}-src.jsonl"
    import json

    src.write_text("".join(json.dumps(c) + "\n" for c in builtin_conversations(n)))
    conversations([str(src)], root, load_config("sft-tiny").sft)
    return root


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory) -> Path:
    return make_base(tmp_path_factory.mktemp("base") / "model")


@pytest.fixture(scope="session")
def conversations_dir(tmp_path_factory) -> Path:
    return make_conversations(tmp_path_factory.mktemp("convs") / "conversations")


@pytest.fixture
def sft_cfg(base_dir):
    """Seconds per run on one CPU core."""
    torch.set_num_threads(1)
    return load_config(
        "sft-tiny",
        overrides=[
            f"sft.base={base_dir}",
            "sft.epochs=0",
            "train.max_steps=8",
            "train.micro_batch_size=4",
            "train.eval_every=4",
            "train.ckpt_every=4",
            "train.log_every=1",
            "train.sample_tokens=0",
            "optim.warmup_steps=2",
        ],
    )
