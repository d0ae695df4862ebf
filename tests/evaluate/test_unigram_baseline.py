"""The unigram baseline of a model's own tokenizer (`unigram_loss` in eval.json) and the rule that
the first champion must beat it by `eval.unigram_margin`."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kiln.components.common.config import EvalConfig, load_config
from kiln.components.evaluate import evaluate
from kiln.components.evaluate.gate import unigram_rule
from kiln.components.evaluate.metrics import unigram_entropy
from kiln.components.tokenization.manifest import read_manifest
from kiln.components.tokenization.shards import open_shard

FAST = {"max_tokens": 3000, "sample_tokens": 1, "prompts": ["The "]}


def test_unigram_entropy_in_nats():
    assert unigram_entropy(np.array([5, 5, 0])) == pytest.approx(math.log(2))
    assert unigram_entropy(np.array([0, 7])) == 0.0
    assert unigram_entropy(np.ones(320, dtype=np.int64)) == pytest.approx(math.log(320))


def test_report_has_the_unigram_baseline_of_the_scored_tokens(trained, tokens_dir, tmp_path):
    report = evaluate(str(trained), str(tokens_dir), str(tmp_path), EvalConfig(**FAST))
    # The scored targets are the val shard's tokens after the first (windows overlap by one).
    entry = read_manifest(tokens_dir).splits["val"][0]
    targets = np.asarray(open_shard(tokens_dir / entry.file)[1 : 1 + report["val_tokens"]])
    expected = unigram_entropy(np.bincount(targets.astype(np.int64)))
    assert report["unigram_loss"] == pytest.approx(expected, rel=1e-12)
    assert report["metrics"]["unigram_loss"] == report["unigram_loss"]
    assert 0 < report["unigram_loss"] < math.log(320)


def test_first_champion_rule_states_the_numbers_and_the_margin():
    margin = load_config("tiny").eval.unigram_margin
    assert margin == 0.05  # the default: 5% below the baseline
    ok = unigram_rule({"val_loss": 3.0, "unigram_loss": 4.0}, margin)
    assert ok.passed
    assert ok.reason == (
        "val_loss 3.0000 is 25.0% below the unigram baseline 4.0000 of its tokenizer "
        "(needs 5% below, eval.unigram_margin)"
    )
    close = unigram_rule({"val_loss": 3.9, "unigram_loss": 4.0}, margin)
    assert not close.passed and "is 2.5% below" in close.reason
    # perplexity 1,586 on a text whose unigram entropy is 5.5 nats: no champion
    useless = unigram_rule({"val_loss": math.log(1586), "unigram_loss": 5.5}, margin)
    assert not useless.passed and "34.0% above the unigram baseline 5.5000" in useless.reason
    assert not unigram_rule({"val_loss": 3.0}, margin).passed  # an eval.json from before
    assert unigram_rule({"val_loss": 3.9, "unigram_loss": 4.0}, 0.0).passed


def test_unigram_margin_is_a_fraction():
    with pytest.raises(ValueError, match="eval.unigram_margin must be < 1"):
        load_config("tiny", overrides=["eval.unigram_margin=5"])
