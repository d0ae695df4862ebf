"""Fixtures for publish tests: a tiny trained run (checkpoints, train log, model) and its eval.

Training helpers come from `tests/evaluate/conftest.py`, loaded by path (tests are no package).
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from kiln.components.common.config import EvalConfig
from kiln.components.evaluate import evaluate

_helpers = runpy.run_path(str(Path(__file__).parents[1] / "evaluate" / "conftest.py"))
FAST = {"max_tokens": 3000, "sample_tokens": 8, "prompts": ["The ", "Once upon a time"]}


@pytest.fixture(scope="session")
def tokens_dir(tmp_path_factory) -> Path:
    return _helpers["make_tokens_dir"](tmp_path_factory.mktemp("tokens"))


def _run(tokens_dir: Path, root: Path, steps: int, *overrides: str) -> dict[str, Path]:
    model = _helpers["train_model"](tokens_dir, root / "train", steps, *overrides)
    evaluate(str(model), str(tokens_dir), str(root / "eval"), EvalConfig(**FAST))
    return {"model": model, "train": root / "train", "eval": root / "eval" / "eval.json"}


@pytest.fixture(scope="session")
def good_run(tokens_dir, tmp_path_factory) -> dict[str, Path]:
    """Trained 60 steps of 32 sequences (checkpoints at 20, 40, 60), evaluated; its eval gate
    passes and its val loss is >10% below the unigram baseline: it can be the first champion."""
    big_batches = ("train.micro_batch_size=32", "optim.lr=1e-2", "train.ckpt_every=20")
    return _run(tokens_dir, tmp_path_factory.mktemp("good"), 60, *big_batches)


@pytest.fixture(scope="session")
def weak_run(tokens_dir, tmp_path_factory) -> dict[str, Path]:
    """Trained 2 steps: a worse val loss, above the unigram baseline; its eval gate passes."""
    return _run(tokens_dir, tmp_path_factory.mktemp("weak"), 2)
