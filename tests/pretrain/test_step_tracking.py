"""What the pretrain step puts in the pipeline's MLflow run (a real `mlflow server`): training and
validation metrics, MLflow system metrics, the training curve; and the replay of train_log.jsonl
that stands in for live logging when Ray workers trained."""

import json

import torch
from mlflow.tracking import MlflowClient

from kiln.components.common.tracking import FileTracker, start_pipeline_run
from kiln.components.pretrain.step import _log_curve, pretrain_step
from kiln.components.pretrain.train_log import TRAIN_LOG

TRAINING_KEYS = {
    "train/loss", "train/lr", "train/grad_norm", "train/tokens_per_sec", "train/skipped_steps",
    "val/loss", "val/bits_per_byte",
}  # fmt: skip


def test_pretrain_step_fills_the_pipeline_run(
    mlflow_env, tokens_dir, tiny_cfg, tmp_path, monkeypatch
):
    monkeypatch.setenv("KILN_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")  # MLflow's own setting
    tiny_cfg.train.max_steps = 60
    run_id = start_pipeline_run(tiny_cfg, tmp_path / "work", run_name="pretrain-step-test")
    pretrain_step(str(tokens_dir), str(tmp_path / "train"), tiny_cfg.to_json(), run_id)

    client = MlflowClient()
    keys = set(client.get_run(run_id).data.metrics)
    assert keys >= TRAINING_KEYS
    assert ("train/mfu" in keys) == torch.cuda.is_available()  # against a datasheet peak only
    assert any(k.startswith("system/cpu_utilization") for k in keys), sorted(keys)
    val_steps = [m.step for m in client.get_metric_history(run_id, "val/bits_per_byte")]
    assert sorted(val_steps) == [10, 20, 30, 40, 50, 60]  # every periodic evaluation
    artifacts = {a.path for a in client.list_artifacts(run_id, "train")}
    assert {"train/loss_curve.png", "train/config.json"} <= artifacts
    assert client.get_run(run_id).info.status == "RUNNING"  # the pipeline's run goes on


def test_a_ray_trained_run_is_replayed_from_the_train_log(tmp_path):
    records = [
        {"step": 1, "loss": 5.0, "grad_norm": 1.0, "lr": 1e-4, "skipped_steps": 0, "rollbacks": 0},
        {"step": 2, "loss": 4.5, "grad_norm": 0.9, "lr": 2e-4, "skipped_steps": 1, "rollbacks": 0,
         "tokens_per_sec": 900.0, "val_loss": 4.6, "val_bits_per_byte": 2.1},
    ]  # fmt: skip
    (tmp_path / TRAIN_LOG).write_text("".join(json.dumps(r) + "\n" for r in records))
    tracker = FileTracker(tmp_path / "tracking")
    _log_curve(tmp_path, tracker, replay=True)
    rows = [json.loads(line) for line in (tmp_path / "tracking" / "metrics.jsonl").open()]
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[1]["val/bits_per_byte"] == 2.1 and rows[1]["train/skipped_steps"] == 1
    assert rows[1]["train/tokens_per_sec"] == 900.0 and "train/tokens_per_sec" not in rows[0]
    assert (tmp_path / "tracking" / "artifacts" / "train" / "loss_curve.png").exists()
