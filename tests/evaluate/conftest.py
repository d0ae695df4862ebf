"""Fixtures for evaluate tests: a tiny tokenized corpus and tiny models trained on it in-process.

The corpus comes from `tests/pretrain/conftest.py` (`make_tokens_dir`), loaded by path so these
tests run on their own; `tests/publish/conftest.py` reuses `train_model` from here the same way.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from kiln.components.common.config import load_config
from kiln.components.pretrain import pretrain
from kiln.components.pretrain.export import export_checkpoint

# Tests are not a package: the pretrain tests' helpers are read from their file.
make_tokens_dir = runpy.run_path(str(Path(__file__).parents[1] / "pretrain" / "conftest.py"))[
    "make_tokens_dir"
]

TINY = [
    "model.dim=32",
    "model.n_layers=2",
    "model.n_heads=4",
    "model.n_kv_heads=2",
    "model.max_seq_len=64",
    "data.seq_len=32",
    "train.micro_batch_size=4",
    "train.log_every=5",
    "train.eval_every=0",
    "train.eval_batches=2",
    "train.sample_tokens=4",
    "optim.warmup_steps=5",
    "tracking.backend=none",
]


def train_model(tokens_dir: Path, out: Path, steps: int, *overrides: str) -> Path:
    """Train the tiny model for `steps` steps (with `overrides` on top of TINY) and export it;
    returns the HF model dir."""
    cfg = load_config(
        "tiny", overrides=[*TINY, f"train.max_steps={steps}", "train.ckpt_every=10", *overrides]
    )
    result = pretrain(cfg, tokens_dir, out)
    return export_checkpoint(result.checkpoint, out / "model", tokens_dir / "tokenizer.json")


@pytest.fixture(scope="session")
def tokens_dir(tmp_path_factory) -> Path:
    return make_tokens_dir(tmp_path_factory.mktemp("tokens"))


@pytest.fixture(scope="session")
def trained(tokens_dir, tmp_path_factory) -> Path:
    """A model trained for 40 steps (its val loss is well below the untrained one's)."""
    return train_model(tokens_dir, tmp_path_factory.mktemp("trained"), steps=40)


@pytest.fixture(scope="session")
def untrained(tokens_dir, tmp_path_factory) -> Path:
    """The same shape after 1 step: a weak baseline."""
    return train_model(tokens_dir, tmp_path_factory.mktemp("untrained"), steps=1)
