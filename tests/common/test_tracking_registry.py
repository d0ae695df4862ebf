"""Model registry against a real `mlflow server`: registration with lineage, idempotency by
training run id, the champion gate, aliases, and models:/ URI resolution."""

from __future__ import annotations

import uuid

import pytest

from kiln.components.common.registry import CANDIDATE, CHAMPION, ModelRegistry
from kiln.components.common.tracking import MlflowTracker


@pytest.fixture
def reg(mlflow_env):
    return ModelRegistry()


def _name():
    return f"kiln-test-{uuid.uuid4().hex[:8]}"


def _register(reg, name, run, val_loss, val_set="vs1"):
    return reg.register(
        name,
        f"s3://bucket/models/{run}",
        training_run_id=run,
        description=f"trained by {run}",
        tags={"dataset_digest": "d" * 8, "val_set_digest": val_set, "code_version": "abc123"},
        metrics={"val_loss": val_loss},
    )


def test_register_is_idempotent_and_sets_candidate(reg, mlflow_env):
    name = _name()
    tracker = MlflowTracker(mlflow_env, "kiln-registry-test")
    tracker.log_metrics({"eval/val_loss": 2.5}, step=10)
    first = reg.register(
        name,
        "s3://bucket/models/run-a",
        training_run_id="run-a",
        mlflow_run_id=tracker.run_id,
        tags={"pipeline_run_id": "p-1", "tokenizer_digest": "t1"},
        metrics={"val_loss": 2.5},
    )
    again = reg.register(name, "s3://bucket/models/run-a", training_run_id="run-a")
    assert first.created and not again.created and again.version == first.version == "1"
    assert len(reg.client.search_model_versions(f"name='{name}'")) == 1

    info = reg.show(name, alias=CANDIDATE)
    assert info["version"] == "1" and info["aliases"] == [CANDIDATE]
    assert info["source"] == "s3://bucket/models/run-a"
    assert info["metrics"] == {"val_loss": 2.5}
    assert info["run_metrics"] == {"eval/val_loss": 2.5}
    assert info["tags"]["training_run_id"] == "run-a"
    assert info["tags"]["pipeline_run_id"] == "p-1"
    assert info["mlflow_run_id"] == tracker.run_id
    tracker.finish()


def test_champion_gate(reg):
    name = _name()
    v1 = _register(reg, name, "r1", 3.0)
    g1 = reg.promote_if_better(name, v1.version)
    assert g1.passed and g1.reason == "no champion yet"

    v2 = _register(reg, name, "r2", 3.5)  # worse: candidate moves, champion stays
    g2 = reg.promote_if_better(name, v2.version)
    assert not g2.passed and "does not beat champion v1" in g2.reason
    assert reg.show(name, alias=CHAMPION)["version"] == "1"
    assert reg.show(name, alias=CANDIDATE)["version"] == "2"

    v3 = _register(reg, name, "r3", 2.0, val_set="other")  # better, but another val set
    g3 = reg.promote_if_better(name, v3.version)
    assert not g3.passed and "not comparable" in g3.reason

    v4 = _register(reg, name, "r4", 2.9)
    g4 = reg.promote_if_better(name, v4.version)
    assert g4.passed and (g4.candidate_value, g4.champion_value) == (2.9, 3.0)
    assert reg.show(name, alias=CHAMPION)["version"] == v4.version
    assert reg.resolve(f"models:/{name}@{CHAMPION}") == "s3://bucket/models/r4"
    assert reg.resolve(f"models:/{name}/2") == "s3://bucket/models/r2"

    listed = {m["name"]: m for m in reg.list_models()}[name]
    assert listed["versions"] == 4 and listed["latest"] == 4
    assert listed["aliases"] == {CANDIDATE: "4", CHAMPION: "4"}


def test_local_store_accepts_local_source(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    reg = ModelRegistry(workdir=str(tmp_path / "work"))
    assert reg.tracking_uri == f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}"
    v = reg.register(
        "local-model", str(tmp_path / "s3/model"), training_run_id="r", metrics={"val_loss": 1}
    )
    assert reg.promote_if_better("local-model", v.version).passed
    assert reg.resolve("models:/local-model@champion") == str(tmp_path / "s3/model")


def test_clear_errors(reg):
    name = _name()
    with pytest.raises(ValueError, match="no registered model named"):
        reg.show(name)
    _register(reg, name, "r1", 1.0)
    with pytest.raises(ValueError, match="has no alias 'champion'"):
        reg.resolve(f"models:/{name}@champion")
    with pytest.raises(ValueError, match="has no version 9"):
        reg.show(name, version=9)
    with pytest.raises(ValueError, match="expected models:/NAME@ALIAS"):
        reg.resolve("models:/x@")
    with pytest.raises(ValueError, match="accepts no local model source"):
        reg.register(name, "/tmp/model", training_run_id="r-local")
