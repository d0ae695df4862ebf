"""Where checkpoints live for every launcher: local and S3 roots (a real S3-compatible server),
complete checkpoints only, the newest across roots, pruning, and Ray's layout read as is."""

from __future__ import annotations

from pathlib import Path

import torch

from kiln.components.common import storage
from kiln.components.pretrain import checkpoint as ckpt
from kiln.components.pretrain import checkpoint_store as store


def writer(step: int):
    def write(directory: Path) -> None:
        ckpt.write_checkpoint(
            directory, {"w": torch.full((2,), float(step))}, {"state": {}}, {"step": step}, {}
        )

    return write


def test_roots_of_each_launcher(tmp_path):
    out = tmp_path / "out"
    assert store.own_root("", out) == str(out / "checkpoints")
    assert store.own_root("s3://b/run/ray", out) == "s3://b/run/ray/checkpoints"
    assert store.resume_roots("", out) == [str(out / "checkpoints"), str(out / "ray/train")]
    # With a storage path OUTPUT is scratch: a stale checkpoint there must not be resumed.
    assert store.resume_roots("s3://b/run/ray", out) == [
        "s3://b/run/ray/checkpoints",
        "s3://b/run/ray/train",  # Ray's run directory
    ]
    assert store.resume_roots("s3://b/run/ray", out, ray=False)[-1] == "s3://b/run/ray/checkpoints"


def test_newest_complete_checkpoint_across_local_roots(tmp_path):
    mine, rays = tmp_path / "checkpoints", tmp_path / "ray" / "train"
    store.save(str(mine), 10, writer(10), keep=3)
    ckpt.save_atomic(rays, 20, writer(20))
    (rays / "step_30").mkdir()  # an interrupted copy: not a checkpoint
    (rays / "step_30" / ckpt.STATE).write_text("{}")
    found = store.newest([str(mine), str(rays)])
    assert found == store.Found(20, str(rays / "step_20"))
    with store.opened(found) as directory:
        assert ckpt.read_checkpoint(directory)["trainer_state"]["step"] == 20
    copied = store.copy_into(found, mine)
    assert copied == mine / "step_20" and store.newest([str(mine)]).step == 20


def test_s3_root_saves_committed_prunes_and_reads_ray_uploads(s3_server, tmp_path):
    root = f"s3://{storage.S3Settings.from_env().bucket}/run/ray"
    mine = storage.join(root, "checkpoints")
    for step in (10, 20, 30):
        assert store.save(mine, step, writer(step), keep=2) == f"{mine}/step_{step}"
    assert store.newest([mine]) == store.Found(30, f"{mine}/step_30")
    assert storage.list_files(f"{mine}/step_20")  # keep=2: step_10 pruned, every file of it
    assert not storage.list_files(f"{mine}/step_10")
    assert storage.is_committed(f"{mine}/step_30")
    # Ray uploads a checkpoint's files without Kiln's manifest: it counts, read unverified.
    local = tmp_path / "ray-step"
    writer(40)(local)
    for path in local.iterdir():
        storage.upload_file(path, f"{root}/train/step_40/{path.name}")
    found = store.newest(store.resume_roots(root, tmp_path / "out"))
    assert found == store.Found(40, f"{root}/train/step_40")
    with store.opened(found) as directory:
        assert ckpt.read_checkpoint(directory)["model"]["w"].tolist() == [40.0, 40.0]
    assert store.copy_into(found, tmp_path / "out" / "checkpoints").name == "step_40"
