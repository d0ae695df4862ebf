"""train_log.jsonl: one record per step, strictly increasing across crashes, resumes and rollbacks;
what it records (lr, throughput, validation) and what the tracker gets; MFU only with a peak."""

import json
import logging

import pytest

from kiln.components.pretrain import pretrain
from kiln.components.pretrain.runtime import Runtime
from kiln.components.pretrain.throughput import mfu, peak_flops, progress_text
from kiln.components.pretrain.train import Trainer
from kiln.components.pretrain.train_log import TRAIN_LOG, plot_curve, step_metrics, truncate


def logged_steps(out) -> list[int]:
    """The step of every line of the log, duplicates included (read_records would hide them)."""
    return [json.loads(line)["step"] for line in (out / TRAIN_LOG).read_text().splitlines()]


class RecordingTracker:
    def __init__(self):
        self.rows: list[tuple[int, dict]] = []

    def log_metrics(self, metrics, step):
        self.rows.append((step, dict(metrics)))

    def keys(self) -> set[str]:
        return {k for _, m in self.rows for k in m}


def test_resume_after_a_crash_logs_every_step_once(tokens_dir, tiny_cfg, tmp_path):
    tiny_cfg.train.ckpt_every = 5
    straight = pretrain(tiny_cfg, tokens_dir, tmp_path / "straight")

    out = tmp_path / "crashed"
    trainer = Trainer(tiny_cfg, tokens_dir, Runtime(out, resume=False))
    step_once = trainer.train_step

    def dies_after_step_13():
        if trainer.step == 13:  # checkpoints at 5 and 10: steps 11-13 will run again
            raise RuntimeError("killed")
        return step_once()

    trainer.train_step = dies_after_step_13
    with pytest.raises(RuntimeError, match="killed"):
        trainer.fit()
    assert logged_steps(out) == list(range(1, 14))

    resumed = pretrain(tiny_cfg, tokens_dir, out, resume=True)
    assert resumed.losses.keys() == set(range(11, 21))
    steps = logged_steps(out)
    assert steps == logged_steps(tmp_path / "straight") == list(range(1, 21))  # no step twice
    lines = [json.loads(line) for line in (out / TRAIN_LOG).read_text().splitlines()]
    assert {r["step"]: r["loss"] for r in lines} == straight.losses  # the same curve, bit for bit
    carried = out / "checkpoints" / "step_20" / TRAIN_LOG  # the copy a checkpoint carries
    assert carried.read_text() == (out / TRAIN_LOG).read_text()


def test_rollback_after_a_loss_spike_keeps_the_log_monotonic(tokens_dir, tiny_cfg, tmp_path):
    tiny_cfg.train.spike_factor = 1.5
    tiny_cfg.train.ckpt_every = 8
    trainer = Trainer(tiny_cfg, tokens_dir, Runtime(tmp_path))
    step_once = trainer.train_step

    def spiky():
        loss, norm, stepped = step_once()
        return (loss * 10 if trainer.step == 12 and trainer.rollbacks == 0 else loss), norm, stepped

    trainer.train_step = spiky
    assert trainer.fit().rollbacks == 1
    assert logged_steps(tmp_path) == list(range(1, 21))
    assert json.loads((tmp_path / TRAIN_LOG).read_text().splitlines()[-1])["rollbacks"] == 1


def test_truncate_rewrites_atomically_and_drops_a_torn_line(tmp_path):
    path = tmp_path / TRAIN_LOG
    path.write_text('{"step": 1, "loss": 3.0}\n{"step": 2, "loss": 2.9}\n{"step": 3, "loss": 2.')
    assert truncate(path, 2) == 1
    assert path.read_text() == '{"step": 1, "loss": 3.0}\n{"step": 2, "loss": 2.9}\n'
    assert truncate(path, 2) == 0 and truncate(tmp_path / "absent.jsonl", 5) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [TRAIN_LOG]  # no temp file left


def test_records_hold_lr_throughput_and_validation_and_reach_the_tracker(
    tokens_dir, tiny_cfg, tmp_path
):
    tracker = RecordingTracker()
    Trainer(tiny_cfg, tokens_dir, Runtime(tmp_path), tracker).fit()
    records = [json.loads(line) for line in (tmp_path / TRAIN_LOG).read_text().splitlines()]
    assert all(
        {"loss", "lr", "grad_norm", "skipped_steps", "rollbacks"} <= r.keys() for r in records
    )
    assert [r["step"] for r in records if "tokens_per_sec" in r] == [5, 10, 15, 20]  # log_every
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [10, 20]  # eval_every
    assert all(0 < r["val_bits_per_byte"] < 10 for r in evals)
    # The tracker gets the same values under their MLflow names, at log and eval steps.
    assert [s for s, _ in tracker.rows] == [5, 10, 15, 20]
    assert tracker.keys() >= {
        "train/loss", "train/lr", "train/grad_norm", "train/tokens_per_sec",
        "train/skipped_steps", "val/loss", "val/bits_per_byte",
    }  # fmt: skip
    assert dict(tracker.rows)[20] == step_metrics(records[-1])
    png = plot_curve(tmp_path / TRAIN_LOG, tmp_path / "curve.png")
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_mfu_on_cpu(tokens_dir, tiny_cfg, tmp_path, caplog):
    """A CPU has no datasheet peak: no MFU in the progress line, the log or the tracker."""
    assert peak_flops("cpu") is None
    tracker = RecordingTracker()
    with caplog.at_level(logging.INFO, logger="kiln.train"):
        Trainer(tiny_cfg, tokens_dir, Runtime(tmp_path, device=_cpu()), tracker).fit()
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step 5/")]
    assert progress and "tok/s" in progress[0] and "MFU" not in progress[0]
    assert "train/mfu" not in tracker.keys()
    assert "mfu" not in (tmp_path / TRAIN_LOG).read_text()


def test_mfu_is_measured_against_the_gpu_datasheet_peak():
    # 100k tokens/s × 6 GFLOP/token on one H100 (989 TFLOP/s dense bf16) = 60.7%
    utilization = mfu(1e5, 6e9, 989e12)
    assert utilization == pytest.approx(0.6067, abs=1e-4)
    assert mfu(1e5, 6e9, 989e12, world=2) == pytest.approx(utilization / 2)
    assert mfu(1e5, 6e9, None) is None
    line = progress_text(5, 20, 4.0, 1e-3, 0.5, 1e5, utilization, 60)
    assert line.endswith("100,000 tok/s | MFU 60.7% | ETA 0:01:00")
    assert "MFU" not in progress_text(5, 20, 4.0, 1e-3, 0.5, 1e5, None, 60)


def _cpu():
    import torch

    return torch.device("cpu")
