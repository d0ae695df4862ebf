"""The registered version against a real MLflow server and moto S3: linked to an MLflow 3 logged
model of its run; `champion` by the rule that applies (unigram baseline while there is none,
then the champion on the same validation set); and the line `kiln run` prints about it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

from kiln.components.common import storage
from kiln.components.common.config import load_config
from kiln.components.common.registry import ModelRegistry
from kiln.components.evaluate import read_eval
from kiln.components.publish import publish
from kiln.pipelines.console import registration_line


def _cfg(*overrides: str):
    name = f"kiln-reg-{uuid.uuid4().hex[:8]}"
    return load_config("tiny", overrides=[f"tracking.model_name={name}", *overrides])


def _publish(run: dict[str, Path], cfg, prefix: str, eval_json: Path | None = None, **kw):
    bucket = storage.S3Settings.from_env().bucket
    return publish(
        str(run["model"]), str(eval_json or run["eval"]), f"s3://{bucket}/{prefix}", cfg, **kw
    )


def test_registered_version_links_to_its_logged_model_and_run(
    s3_server, mlflow_env, good_run, tokens_dir
):
    cfg = _cfg()
    out = _publish(
        good_run, cfg, "lm", tokens_dir=str(tokens_dir), train_dir=str(good_run["train"])
    )
    reg, run_id = out["registered"], out["mlflow_run_id"]
    client = MlflowClient()
    version = client.get_model_version(reg["name"], reg["version"])
    assert version.tags["model_id"] == reg["model_id"] and version.run_id == run_id
    assert version.source == out["model_uri"]  # the served copy stays in S3
    assert ModelRegistry().show(reg["name"], version=reg["version"])["model_id"] == reg["model_id"]

    model = client.get_logged_model(reg["model_id"])
    assert model.source_run_id == run_id and model.status == LoggedModelStatus.READY
    assert model.name == reg["name"] and model.params["hidden_size"] == "32"
    listed = json.loads(model.tags["mlflow.modelVersions"])  # the model page lists the version
    assert [(v["name"], str(v["version"])) for v in listed] == [(reg["name"], reg["version"])]
    assert model.tags["val_set_digest"] == read_eval(good_run["eval"])["val_set_digest"]
    metrics = {m.key: m.value for m in model.metrics}
    assert metrics["eval/val_loss"] == pytest.approx(read_eval(good_run["eval"])["val_loss"])
    files = {f.path for f in client.list_logged_model_artifacts(reg["model_id"])}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    run = client.get_run(run_id)
    assert [o.model_id for o in run.outputs.model_outputs] == [reg["model_id"]]
    assert run.data.tags["champion_rule"] == "unigram baseline"

    again = _publish(good_run, cfg, "lm")  # a retried publish: same version, same model
    assert again["registered"]["model_id"] == reg["model_id"]
    assert len(client.get_run(run_id).outputs.model_outputs) == 1


def test_first_champion_must_beat_the_unigram_baseline_then_the_champion(
    s3_server, mlflow_env, good_run, weak_run
):
    cfg = _cfg()
    name = cfg.tracking.model_name
    weak = read_eval(weak_run["eval"])
    assert weak["gate"]["passed"] and weak["val_loss"] > weak["unigram_loss"]

    # No champion yet, and the 2-step model is worse than the unigram baseline: candidate only.
    first = _publish(weak_run, cfg, "weak")
    assert first["registered"]["aliases"] == ["candidate"]
    assert first["champion"]["moved"] is False and first["champion"]["rule"] == "unigram baseline"
    assert "above the unigram baseline" in first["champion"]["reason"]
    assert ModelRegistry().version_by_alias(name, "champion") is None

    # The trained model beats it by more than eval.unigram_margin: the first champion.
    second = _publish(good_run, cfg, "strong")
    assert second["registered"]["aliases"] == ["candidate", "champion"]
    assert second["champion"]["rule"] == "unigram baseline" and second["champion"]["moved"]
    assert "below the unigram baseline" in second["champion"]["reason"]

    # From now on the champion is the bar, on the same validation set.
    third = _publish(weak_run, cfg, "weak-again", pipeline_run_id="p3")
    assert third["registered"]["version"] == first["registered"]["version"]  # same weights
    assert third["champion"]["rule"] == "champion comparison" and not third["champion"]["moved"]
    assert (
        f"does not beat champion v{second['registered']['version']}" in third["champion"]["reason"]
    )
    champion = ModelRegistry().version_by_alias(name, "champion")
    assert champion.version == second["registered"]["version"]


def test_a_strict_margin_keeps_the_first_champion_away(s3_server, mlflow_env, good_run):
    cfg = _cfg("eval.unigram_margin=0.99")
    out = _publish(good_run, cfg, "strict")
    assert out["registered"]["aliases"] == ["candidate"] and not out["champion"]["moved"]
    assert "(needs 99% below, eval.unigram_margin)" in out["champion"]["reason"]


# ------------------------------------------------------------------- what `kiln run` prints
REG = {"name": "kiln-llama", "version": "3", "aliases": ["candidate", "champion"]}


def test_summary_line_says_which_alias_and_which_rule():
    champion = {"moved": True, "rule": "unigram baseline", "reason": "val_loss 3.0000 is 25.0% below the unigram baseline 4.0000 of its tokenizer (needs 5% below, eval.unigram_margin)"}  # fmt: skip
    line = registration_line(REG, champion)
    assert line == (
        "kiln-llama version 3 (aliases: candidate, champion): champion, by the first-champion "
        "rule (no champion yet: beat the unigram baseline): val_loss 3.0000 is 25.0% below the "
        "unigram baseline 4.0000 of its tokenizer (needs 5% below, eval.unigram_margin)"
    )
    assert "no champion yet;" not in line and "champion: no champion" not in line


def test_summary_line_for_a_candidate_that_stays_one():
    reg = {**REG, "aliases": ["candidate"]}
    line = registration_line(
        reg,
        {"moved": False, "rule": "champion comparison", "reason": "val_loss 3.5 does not beat champion v1's 3.2"},
    )  # fmt: skip
    assert line.startswith(
        "kiln-llama version 3 (aliases: candidate): candidate only, not champion"
    )
    assert line.endswith(
        "by the champion rule (beat the champion on the same validation set): "
        "val_loss 3.5 does not beat champion v1's 3.2"
    )
    gate = registration_line(
        reg, {"moved": False, "rule": "eval gate", "reason": "eval gate failed: x"}
    )
    assert gate.endswith("candidate only, not champion, by the eval gate: eval gate failed: x")


def test_kiln_run_summary_names_the_alias_and_the_rule(tmp_path):
    from kiln.pipelines.commands.run import _summary
    from kiln.pipelines.local import LocalResult

    run_dir = tmp_path / "kfp" / "kiln-pretrain-1"
    published = {
        "registered": {"name": "kiln-llama", "version": "1", "aliases": ["candidate"]},
        "champion": {
            "moved": False,
            "rule": "unigram baseline",
            "reason": "val_loss 7.3690 is 34.0% above the unigram baseline 5.5000 of its "
            "tokenizer (needs 5% below, eval.unigram_margin)",
        },
        "model_uri": "s3://kiln/runs/r/model",
        "report_uri": "s3://kiln/runs/r/report",
    }
    evaluated = {"val_loss": 7.369, "perplexity": 1586.0, "bits_per_byte": 3.1, "gate": {"passed": True}}  # fmt: skip
    result = LocalResult(
        run_dir, run_dir / "model", "sqlite:///m.db", "r", evaluated, published, 60
    )
    registered = next(line for line in _summary(result).splitlines() if "registered" in line)
    assert registered.split(None, 1)[1] == (
        "kiln-llama version 1 (aliases: candidate): candidate only, not champion, by the "
        "first-champion rule (no champion yet: beat the unigram baseline): val_loss 7.3690 is "
        "34.0% above the unigram baseline 5.5000 of its tokenizer (needs 5% below, "
        "eval.unigram_margin)"
    )
