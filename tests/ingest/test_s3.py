"""Ingest from s3:// against a real S3-compatible HTTP server (moto_server on 127.0.0.1)."""

import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from kiln.components.common import storage
from kiln.components.common.config import IngestConfig
from kiln.components.ingest import ingest


def test_ingest_from_s3_prefix_all_formats(s3_server, tmp_path, make_prose):
    bucket = os.environ["AWS_S3_BUCKET"]
    local = tmp_path / "local"
    local.mkdir()
    jsonl = "".join(json.dumps({"id": f"j{i}", "text": make_prose(i)}) + "\n" for i in range(6))
    (local / "a.jsonl.gz").write_bytes(gzip.compress(jsonl.encode()))
    (local / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl.encode()))
    (local / "c.txt").write_text(make_prose(50))
    table = pa.table(
        {"id": [f"p{i}" for i in range(4)], "text": [make_prose(60 + i) for i in range(4)]}
    )
    pq.write_table(table, local / "d.parquet")
    (local / "notes.csv").write_text("ignored,by,suffix\n")
    for f in sorted(local.iterdir()):
        storage.upload_file(f, f"s3://{bucket}/corpus/{f.name}")
    prefix = f"s3://{bucket}/corpus/"
    cfg = IngestConfig(workers=2, val_fraction=0.25)
    stats = ingest([prefix], tmp_path / "out", cfg)
    assert stats.files == 4  # .csv skipped by suffix
    assert stats.documents_in == 6 + 6 + 1 + 4
    assert stats.duplicates_exact == 6  # b.jsonl.zst repeats a.jsonl.gz
    assert stats.kept == 11 and not stats.unreadable
    assert set(stats.sources) == {"corpus"}
    ids = {
        r["id"]
        for s in ("train", "val")
        for f in (tmp_path / "out" / s).glob("*.parquet")
        for r in pq.read_table(f).to_pylist()
    }
    assert {"j0", "j5", "p3", f"{prefix}c.txt"} <= ids
    assert stats.bytes_in > len(jsonl) * 2


def test_single_s3_object_with_a_source_name(s3_server, tmp_path, make_prose):
    bucket = os.environ["AWS_S3_BUCKET"]
    good = "".join(json.dumps({"text": make_prose(i)}) + "\n" for i in (1, 2))  # train + val
    (tmp_path / "ok.jsonl").write_text(good + "{broken\n")
    storage.upload_file(tmp_path / "ok.jsonl", f"s3://{bucket}/x/ok.jsonl")
    uri = f"s3://{bucket}/x/ok.jsonl"
    stats = ingest([f"books={uri}"], tmp_path / "out", IngestConfig(workers=1))
    assert stats.kept == 2 and stats.unreadable == {"bad_json": 1}
    assert stats.sources["books"]["kept"] == 2 and stats.per_file[uri]["kept"] == 2
    assert (
        stats.examples["bad_json"][0]["file"] == uri and stats.examples["bad_json"][0]["line"] == 3
    )
