"""`publish` against a real moto S3 server and a real MLflow server: verified upload, MLflow
metrics/params/lineage/artifacts, registered version and aliases, idempotency, outages."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path

import boto3
import pytest
import yaml
from mlflow.tracking import MlflowClient

from kiln.components.common import storage
from kiln.components.common.config import load_config
from kiln.components.common.registry import ModelRegistry
from kiln.components.evaluate import read_eval
from kiln.components.publish import publish


def _cfg(*overrides: str):
    name = f"kiln-pub-{uuid.uuid4().hex[:8]}"
    return load_config("tiny", overrides=[f"tracking.model_name={name}", *overrides])


def _s3():
    return boto3.client(
        "s3",
        endpoint_url=storage.S3Settings.from_env().endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def _objects(bucket: str, prefix: str) -> dict[str, bytes]:
    s3 = _s3()
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for o in page.get("Contents", [])
    ]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def test_publish_uploads_tracks_registers(
    s3_server, mlflow_env, secret_canary, good_run, tokens_dir, monkeypatch
):
    bucket = storage.S3Settings.from_env().bucket
    cfg = _cfg("publish.upload_checkpoints=latest")
    out_uri = f"s3://{bucket}/runs/r1"
    out = publish(
        str(good_run["model"]),
        str(good_run["eval"]),
        out_uri,
        cfg,
        tokens_dir=str(tokens_dir),
        train_dir=str(good_run["train"]),
        pipeline_run_id="kfp-run-42",
    )
    report = read_eval(good_run["eval"])
    name = cfg.tracking.model_name

    # S3: every model file is there, byte for byte, and its sha256 is what publish returned.
    objects = _objects(bucket, "runs/r1/")
    for local in sorted(Path(good_run["model"]).iterdir()):
        key = f"runs/r1/model/{local.name}"
        digest = hashlib.sha256(objects[key]).hexdigest()
        assert digest == hashlib.sha256(local.read_bytes()).hexdigest()
        assert out["files"][f"s3://{bucket}/{key}"] == digest
    assert "runs/r1/model/_KILN_MANIFEST.json" in objects and storage.is_committed(out["model_uri"])
    assert "runs/r1/report/loss_curve.png" in objects and "runs/r1/report/eval.json" in objects
    index = json.loads(objects["runs/r1/report/checkpoints.json"])
    assert [c["name"] for c in index] == ["step_20", "step_40", "step_60"]
    latest = good_run["train"] / "checkpoints" / "step_60" / "model.safetensors"
    assert index[-1]["files"]["model.safetensors"]["sha256"] == storage.sha256_file(latest)
    assert "runs/r1/checkpoints/step_60/optimizer.pt" in objects  # upload_checkpoints=latest
    assert not any(k.startswith("runs/r1/checkpoints/step_20/") for k in objects)

    # MLflow run: eval metrics, params (resolved config), lineage tags, artifacts.
    client = MlflowClient()
    run = client.get_run(out["mlflow_run_id"])
    assert run.data.metrics["eval/val_loss"] == pytest.approx(report["val_loss"])
    assert run.data.metrics["eval/bits_per_byte"] == pytest.approx(report["bits_per_byte"])
    assert run.data.params["tracking.model_name"] == name
    assert run.data.params["train.max_steps"] == str(cfg.train.max_steps)
    tags = run.data.tags
    assert tags["tokenizer_digest"] == storage.sha256_file(tokens_dir / "tokenizer.json")
    assert tags["val_set_digest"] == report["val_set_digest"]
    assert tags["pipeline_run_id"] == "kfp-run-42" and tags["model_uri"] == out["model_uri"]
    assert tags["code_version"].startswith("kiln 0.") and "dataset_digest" in tags
    artifacts = {a.path for folder in ("eval", "plots", "config", "serving")
                 for a in client.list_artifacts(run.info.run_id, folder)}  # fmt: skip
    assert {
        "eval/eval.json",
        "eval/samples.json",
        "plots/loss_curve.png",
        "config/config.json",
        "serving/inference_service.yaml",
    } <= artifacts
    secret_canary.assert_absent_from_mlflow_run(run.info.run_id)

    # Registry: one version whose source is the uploaded model, candidate + champion.
    reg = out["registered"]
    assert reg["created"] and reg["aliases"] == ["candidate", "champion"]
    assert out["champion"]["moved"] and out["champion"]["rule"] == "unigram baseline"
    assert "below the unigram baseline" in out["champion"]["reason"]
    info = ModelRegistry().show(name, version=reg["version"])
    assert info["source"] == out["model_uri"] and info["mlflow_run_id"] == out["mlflow_run_id"]
    assert info["metrics"]["val_loss"] == pytest.approx(report["val_loss"])
    assert info["tags"]["pipeline_run_id"] == "kfp-run-42"

    # The InferenceService serves exactly this version from S3.
    isvc = yaml.safe_load(objects["runs/r1/serving/inference_service.yaml"])
    assert out["inference_service"] == f"{out_uri}/serving/inference_service.yaml"
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == out["model_uri"]
    labels = isvc["metadata"]["labels"]
    assert labels["kiln.dev/model-version"] == reg["version"] and isvc["metadata"]["name"] == (
        f"{name}-v{reg['version']}"
    )
    assert labels["kueue.x-k8s.io/queue-name"] == cfg.publish.serving_queue == "kiln-queue"

    # Re-publish (as a retried pipeline step would): same version, same run, nothing rewritten.
    committed = storage.read_manifest(out["model_uri"])
    again = publish(
        str(good_run["model"]), str(good_run["eval"]), out_uri, cfg,
        tokens_dir=str(tokens_dir), train_dir=str(good_run["train"]),
    )  # fmt: skip
    assert again["registered"]["version"] == reg["version"] and not again["registered"]["created"]
    assert again["mlflow_run_id"] == out["mlflow_run_id"]
    assert storage.read_manifest(out["model_uri"])["created_unix"] == committed["created_unix"]
    assert len(ModelRegistry().client.search_model_versions(f"name='{name}'")) == 1


def test_champion_moves_only_when_both_gates_pass(
    s3_server, mlflow_env, good_run, weak_run, tmp_path
):
    bucket = storage.S3Settings.from_env().bucket
    cfg = _cfg()
    name = cfg.tracking.model_name
    first = publish(str(good_run["model"]), str(good_run["eval"]), f"s3://{bucket}/a", cfg)
    assert first["registered"]["aliases"] == ["candidate", "champion"]

    # Eval gate failed: registered as candidate only, champion stays.
    failing = json.loads(Path(weak_run["eval"]).read_text())
    failing["gate"] = {"passed": False, "reasons": ["x"], "failed": ["val_loss 9 exceeds 1"]}
    (tmp_path / "eval.json").write_text(json.dumps(failing))
    second = publish(str(weak_run["model"]), str(tmp_path / "eval.json"), f"s3://{bucket}/b", cfg)
    assert second["registered"]["aliases"] == ["candidate"]
    assert second["champion"] == {
        "moved": False,
        "rule": "eval gate",
        "reason": "eval gate failed: val_loss 9 exceeds 1",
    }
    assert ModelRegistry().show(name, alias="champion")["version"] == first["registered"]["version"]

    # Eval gate passed, but the registry gate sees a worse val loss than the champion's.
    third = publish(
        str(weak_run["model"]), str(weak_run["eval"]), f"s3://{bucket}/c", cfg, run_id=None,
        pipeline_run_id="p3",
    )  # fmt: skip
    assert third["registered"]["version"] == second["registered"]["version"]  # same weights
    assert (
        not third["champion"]["moved"] and "does not beat champion" in third["champion"]["reason"]
    )
    assert ModelRegistry().show(name, alias="champion")["version"] == first["registered"]["version"]


def test_long_outage_registers_nothing(s3_proxy, mlflow_env, good_run):
    bucket = storage.S3Settings.from_env().bucket
    cfg = _cfg("storage.retries=2", "storage.retry_backoff_s=0.1")
    out_uri = f"s3://{bucket}/runs/down"
    s3_proxy.outage_after(n_bytes=40_000, seconds=3.0)  # mid-upload; retries give up first
    with pytest.raises(storage.StorageError, match="nothing was logged to MLflow or registered"):
        publish(str(good_run["model"]), str(good_run["eval"]), out_uri, cfg)
    assert s3_proxy.outages == 1
    while s3_proxy.paused.is_set():
        time.sleep(0.1)
    assert not storage.is_committed(f"{out_uri}/model")  # no commit marker
    assert not storage.exists(f"{out_uri}/report")
    name = cfg.tracking.model_name
    assert name not in [m["name"] for m in ModelRegistry().list_models()]
    runs = MlflowClient().search_runs(
        [e.experiment_id for e in MlflowClient().search_experiments()],
        filter_string=f"tags.output_uri = '{out_uri}'",
    )
    assert runs == []


def test_local_output_without_tracking(good_run, tmp_path):
    """A local directory stands in for S3; with tracking off nothing is registered."""
    cfg = _cfg("tracking.backend=none")
    out = publish(str(good_run["model"]), str(good_run["eval"]), str(tmp_path / "pub"), cfg)
    assert out["registered"] is None and out["inference_service"] is None
    manifest = storage.read_manifest(str(tmp_path / "pub" / "model"))
    local = Path(good_run["model"]) / "model.safetensors"
    assert manifest["files"]["model.safetensors"]["sha256"] == storage.sha256_file(local)
    assert (tmp_path / "pub" / "report" / "eval.json").read_bytes() == good_run["eval"].read_bytes()
    with pytest.raises(ValueError, match="publish.upload_checkpoints must be one of"):
        publish(str(good_run["model"]), str(good_run["eval"]), str(tmp_path / "x"),
                _cfg("publish.upload_checkpoints=some"))  # fmt: skip
    with pytest.raises(FileNotFoundError, match="not a complete Hugging Face model directory"):
        publish(str(tmp_path), str(good_run["eval"]), str(tmp_path / "x"), cfg)


def test_cli_publish_then_evaluate_against_the_champion(
    s3_server, mlflow_env, good_run, weak_run, tokens_dir, tmp_path, capsys
):
    from kiln.pipelines.cli import main

    bucket = storage.S3Settings.from_env().bucket
    name = f"kiln-cli-{uuid.uuid4().hex[:8]}"
    args = ["publish", "--model", str(good_run["model"]), "--eval", str(good_run["eval"])]
    args += ["--output", f"s3://{bucket}/cli", "--name", name, "--train", str(good_run["train"])]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"version:   {name} v1 (registered; aliases: candidate, champion)" in out
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["registered"]["created"] is False and result["registered"]["version"] == "1"

    # The weak model, evaluated against the registered champion (downloaded from S3, verified).
    ev = ["evaluate", "--model", str(weak_run["model"]), "--tokens", str(tokens_dir)]
    ev += ["--output", str(tmp_path), "--baseline", f"models:/{name}@champion", "--strict"]
    assert main([*ev, "--set", "eval.max_tokens=2000"]) == 1
    report = read_eval(tmp_path)
    assert report["baseline"]["model_dir"] == f"models:/{name}@champion"
    assert report["baseline"]["val_loss"] < report["val_loss"]
    assert "does not beat baseline" in report["gate"]["failed"][0]
