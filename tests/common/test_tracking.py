"""Trackers: the no-op and file trackers, the rank-0 factory, and MlflowTracker against a real
`mlflow server` (params flattened and secret-free, float metrics, one run shared via MLFLOW_RUN_ID)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kiln.components.common.config import load_config
from kiln.components.common.tracking import (
    FileTracker,
    MlflowTracker,
    NullTracker,
    end_pipeline_run,
    flatten,
    make_tracker,
    mlflow_client,
    start_pipeline_run,
)


def test_flatten_masks_secret_env_values(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    flat = flatten({"a": {"b": 1, "c": [1, 2]}, "url": "http://u:s3cr3t-value@h", "e": {}})
    assert flat == {"a.b": "1", "a.c": "[1, 2]", "url": "http://u:***@h", "e": "{}"}


def test_make_tracker_is_rank0_only_and_honours_backend(tmp_path):
    cfg = load_config("tiny", overrides=["tracking.backend=file"])
    assert isinstance(make_tracker(cfg, rank=1, workdir=tmp_path), NullTracker)
    assert isinstance(make_tracker(cfg, rank=0, workdir=tmp_path), FileTracker)
    off = load_config("tiny", overrides=["tracking.backend=none"])
    assert isinstance(make_tracker(off, rank=0, workdir=tmp_path), NullTracker)
    with pytest.raises(ValueError, match="tracking.backend must be"):
        load_config("tiny", overrides=["tracking.backend=wandb"])


def test_file_tracker_writes_jsonl_params_tags_artifacts(tmp_path):
    t = FileTracker(tmp_path / "trk")
    t.log_params({"train": {"max_steps": 10}})
    t.log_metrics({"loss": torch.tensor(2.5), "lr": np.float32(0.5), "bad": "x"}, step=3)
    t.set_tags({"code_version": "abc"})
    (tmp_path / "eval.json").write_text("{}")
    t.log_artifact(tmp_path / "eval.json", "reports")
    t.finish()
    rows = [json.loads(line) for line in (tmp_path / "trk/metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 3 and rows[0]["loss"] == 2.5 and rows[0]["lr"] == 0.5
    assert "bad" not in rows[0]
    assert json.loads((tmp_path / "trk/params.json").read_text()) == {"train.max_steps": "10"}
    assert json.loads((tmp_path / "trk/tags.json").read_text())["status"] == "FINISHED"
    assert (tmp_path / "trk/artifacts/reports/eval.json").exists()


def test_mlflow_tracker_shares_one_run_across_steps(
    mlflow_env, secret_canary, tmp_path, monkeypatch
):
    cfg = load_config("tiny", overrides=[f"storage.root=s3://b/{secret_canary.value}"])
    first = make_tracker(cfg, rank=0, workdir=tmp_path, run_name="pipeline")
    assert isinstance(first, MlflowTracker) and first.owns_run
    first.log_params(cfg.to_dict())
    first.log_metrics({"train/loss": torch.tensor(3.0)}, step=1)
    first.log_metrics({"train/loss": np.float64(2.0)}, step=2)
    first.set_tags({"dataset_digest": "d1", "s3_uri": f"s3://b/{secret_canary.value}"})

    # A later pipeline step joins the same run through the environment and doesn't end it.
    monkeypatch.setenv("MLFLOW_RUN_ID", first.run_id)
    second = make_tracker(cfg, rank=0, workdir=tmp_path)
    assert second.run_id == first.run_id and not second.owns_run
    second.log_metrics({"eval/val_loss": 1.5}, step=2)
    cfg.model.vocab_size = 777  # e.g. set from the tokenizer: kept as first logged, no crash
    second.log_params({**cfg.to_dict(), "evaluate": {"batches": 4}})
    report = tmp_path / "eval.json"
    report.write_text('{"val_loss": 1.5}')
    second.log_artifact(report, "eval")
    second.finish()
    client = mlflow_client(mlflow_env)
    assert client.get_run(first.run_id).info.status == "RUNNING"
    first.finish()

    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.max_steps"] == str(cfg.train.max_steps)
    assert run.data.params["model.dim"] == "64"
    assert run.data.params["model.vocab_size"] == "4096"
    assert run.data.params["evaluate.batches"] == "4"
    assert run.data.metrics == {"train/loss": 2.0, "eval/val_loss": 1.5}
    history = client.get_metric_history(first.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(1, 3.0), (2, 2.0)]
    assert [a.path for a in client.list_artifacts(first.run_id, "eval")] == ["eval/eval.json"]
    secret_canary.assert_absent_from_mlflow_run(first.run_id)
    assert run.data.params["storage.root"] == "s3://b/***"


def test_pipeline_run_lifecycle(mlflow_env, tmp_path, monkeypatch):
    cfg = load_config("tiny")
    monkeypatch.setenv("MLFLOW_RUN_ID", "not-this-one")  # a new pipeline run ignores the env
    run_id = start_pipeline_run(cfg, tmp_path, run_name="p-1", tags={"pipeline_run_id": "p-1"})
    monkeypatch.delenv("MLFLOW_RUN_ID")
    step = make_tracker(cfg, rank=0, workdir=tmp_path, run_id=run_id)
    step.log_metrics({"train/loss": 1.0}, step=1)
    step.finish()  # a joining step never ends the run
    client = mlflow_client(mlflow_env)
    assert client.get_run(run_id).info.status == "RUNNING"
    end_pipeline_run(cfg, run_id, "FAILED", tmp_path)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["pipeline_run_id"] == "p-1"
    assert start_pipeline_run(load_config("tiny", overrides=["tracking.backend=file"])) == ""
