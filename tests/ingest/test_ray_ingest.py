"""Ingest through Ray tasks on a local Ray cluster gives the very bytes of a local run."""

import json
import os

import pytest

ray = pytest.importorskip("ray")

from kiln.components.common.config import IngestConfig  # noqa: E402
from kiln.components.ingest import ingest  # noqa: E402

pytestmark = pytest.mark.ray
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def test_ray_ingest_matches_local(tmp_path, make_prose):
    d = tmp_path / "in"
    d.mkdir()
    for f in range(5):  # duplicates across files, and a bad line
        docs = [make_prose(f * 10 + i) for i in range(8)] + [make_prose(i) for i in range(2)]
        lines = [json.dumps({"id": f"{f}-{i}", "text": t}) for i, t in enumerate(docs)]
        (d / f"{f}.jsonl").write_text("\n".join(lines + ["{bad"]) + "\n")
    local = ingest([str(d)], tmp_path / "local", IngestConfig(workers=1, val_fraction=0.2))
    ray.init(
        address="local",  # a private cluster, even if another one runs on this machine
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        cfg = IngestConfig(val_fraction=0.2, ray_address="local")
        remote = ingest([str(d)], tmp_path / "ray", cfg)
    finally:
        ray.shutdown()
    assert remote.duplicates_exact == local.duplicates_exact == 10
    assert remote.unreadable == {"bad_json": 5} and remote.kept == local.kept
    for split in ("train", "val"):
        a = sorted((tmp_path / "local" / split).glob("*.parquet"))
        b = sorted((tmp_path / "ray" / split).glob("*.parquet"))
        assert [x.read_bytes() for x in a] == [x.read_bytes() for x in b]
