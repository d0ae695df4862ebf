"""`evaluate` on a tiny model trained in the test: metrics, eval.json, gate, baseline."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from tokenizers import Tokenizer

from kiln.components.common.config import EvalConfig
from kiln.components.evaluate import evaluate, read_eval
from kiln.components.evaluate.metrics import token_byte_lengths
from kiln.components.evaluate.run import val_set_digest
from kiln.components.tokenization.manifest import read_manifest

FAST = {"max_tokens": 4000, "sample_tokens": 8, "prompts": ["The ", "Once upon a time"]}


def test_byte_lengths_count_utf8_bytes_exactly(tokens_dir):
    """Σ bytes(id) over an encoding equals the text's UTF-8 length, multi-byte characters too."""
    tok = Tokenizer.from_file(str(tokens_dir / "tokenizer.json"))
    lengths = token_byte_lengths(tokens_dir / "tokenizer.json", tok.get_vocab_size())
    text = "Grüße, naïve café — 東京 🚀 and plain ASCII.\n\tdef f(x): return x"
    ids = tok.encode(text).ids
    assert int(lengths[ids].sum()) == len(text.encode("utf-8"))
    assert lengths[tok.token_to_id("<|endoftext|>")] == 0  # the separator is not text


def test_metrics_report_and_samples(trained, tokens_dir, tmp_path):
    cfg = EvalConfig(**FAST)
    report = evaluate(str(trained), str(tokens_dir), str(tmp_path / "eval"), cfg)
    assert report == read_eval(tmp_path / "eval" / "eval.json")  # written == returned
    assert math.isclose(report["perplexity"], math.exp(report["val_loss"]), rel_tol=1e-9)
    assert 0 < report["val_loss"] < math.log(320)  # better than uniform over the vocabulary
    assert report["val_tokens"] == 4000 and report["val_bytes"] > report["val_tokens"]
    bpb = report["val_loss"] * report["val_tokens"] / math.log(2) / report["val_bytes"]
    assert report["bits_per_byte"] > 0 and math.isclose(report["bits_per_byte"], bpb)
    manifest = read_manifest(tokens_dir)
    assert report["val_set_digest"] == val_set_digest(manifest.splits["val"])
    assert [s["prompt"] for s in report["samples"]] == FAST["prompts"]
    assert all(s["text"] == s["prompt"] + s["completion"] for s in report["samples"])
    assert any(s["completion"] for s in report["samples"])
    assert report["gate"] == {
        "passed": True,
        "reasons": [report["gate"]["reasons"][0]],
        "failed": [],
    }
    again = evaluate(str(trained), str(tokens_dir), str(tmp_path / "again"), cfg)
    assert again["samples"] == report["samples"]  # seeded
    assert again["val_loss"] == report["val_loss"]  # deterministic windows


def test_all_tokens_are_scored_once(trained, tokens_dir, tmp_path):
    """max_tokens=0 scores every val token after the first, whatever the window size."""
    n_val = read_manifest(tokens_dir).tokens("val")
    fast = {"max_tokens": 0, "batch_size": 64, "sample_tokens": 1, "prompts": ["The "]}
    a = evaluate(str(trained), str(tokens_dir), str(tmp_path / "a"), EvalConfig(**fast))
    b = evaluate(str(trained), str(tokens_dir), str(tmp_path / "b"), EvalConfig(**fast, seq_len=17))
    assert a["val_tokens"] == b["val_tokens"] == n_val - 1
    assert a["val_bytes"] == b["val_bytes"]
    assert a["val_loss"] != b["val_loss"]  # other contexts, same targets


def test_gate_fails_on_thresholds(trained, tokens_dir, tmp_path):
    cfg = EvalConfig(**FAST, max_val_loss=0.5, max_bits_per_byte=100.0)
    report = evaluate(str(trained), str(tokens_dir), str(tmp_path), cfg)
    gate = report["gate"]
    assert gate["passed"] is False
    assert len(gate["failed"]) == 1 and "exceeds eval.max_val_loss 0.5000" in gate["failed"][0]
    assert any("within eval.max_bits_per_byte" in r for r in gate["reasons"])
    assert json.loads((tmp_path / "eval.json").read_text())["gate"]["passed"] is False


def test_baseline_comparison(trained, untrained, tokens_dir, tmp_path):
    cfg = EvalConfig(**FAST)
    report = evaluate(str(trained), str(tokens_dir), str(tmp_path / "a"), cfg, str(untrained))
    base = report["baseline"]
    assert base["model_dir"] == str(untrained) and base["val_tokens"] == report["val_tokens"]
    assert base["val_loss"] > report["val_loss"] + 0.1  # 40 steps beat 1 step
    assert report["metrics"]["val_loss_improvement"] == pytest.approx(
        base["val_loss"] - report["val_loss"]
    )
    assert report["gate"]["passed"] and "beats baseline" in report["gate"]["reasons"][-1]
    # The other way round, or with a margin the model does not reach, the gate fails.
    worse = evaluate(str(untrained), str(tokens_dir), str(tmp_path / "b"), cfg, str(trained))
    assert not worse["gate"]["passed"] and "does not beat baseline" in worse["gate"]["failed"][0]
    margin = EvalConfig(**FAST, baseline_margin=50.0)
    strict = evaluate(str(trained), str(tokens_dir), str(tmp_path / "c"), margin, str(untrained))
    assert not strict["gate"]["passed"]


def test_refuses_mismatched_inputs(trained, tokens_dir, tmp_path):
    other = tmp_path / "model"
    shutil.copytree(trained, other)
    tok = json.loads((other / "tokenizer.json").read_text())
    tok["added_tokens"][0]["content"] = "<|other|>"
    (other / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ValueError, match="another tokenizer"):
        evaluate(str(other), str(tokens_dir), str(tmp_path / "e"), EvalConfig(**FAST))
    with pytest.raises(ValueError, match="eval.seq_len=65 exceeds"):
        evaluate(str(trained), str(tokens_dir), str(tmp_path / "e"), EvalConfig(seq_len=65))
    broken = tmp_path / "tokens"
    shutil.copytree(tokens_dir, broken)
    shard = next((broken / "val").glob("*.bin"))
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 does not match"):
        evaluate(str(trained), str(broken), str(tmp_path / "e"), EvalConfig(**FAST))
    assert not (tmp_path / "e" / "eval.json").exists()


def test_cli(trained, untrained, tokens_dir, tmp_path, capsys):
    from kiln.pipelines.cli import main

    args = ["evaluate", "--model", str(trained), "--tokens", str(tokens_dir)]
    args += ["--output", str(tmp_path), "--set", "eval.max_tokens=2000"]
    args += ["--set", "eval.sample_tokens=4", "--baseline", str(untrained)]
    assert main(args) == 0
    out = capsys.readouterr().out
    report = read_eval(tmp_path)
    assert f"val_loss {report['val_loss']:.4f}" in out and "gate: passed" in out
    assert report["val_tokens"] == 2000 and report["baseline"]["model_dir"] == str(untrained)
    assert main([*args, "--set", "eval.max_val_loss=0.1", "--strict"]) == 1
    assert "gate: FAILED" in capsys.readouterr().out
    assert main([*args, "--set", "eval.nope=1"]) == 2
    assert "unknown config key 'eval.nope'" in capsys.readouterr().err
