"""Storage API against a real S3-compatible server (moto) and the local stand-in."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import boto3
import pytest

from kiln.components.common import storage
from kiln.components.common.storage import MANIFEST_NAME, IntegrityError, S3Settings


def _make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "config.json": b'{"dim": 64}',
        "model.safetensors": os.urandom(300_000),
        "tok/tokenizer.json": b'{"model": "bpe"}',
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def _raw_s3():
    return boto3.client(
        "s3",
        endpoint_url=os.environ["AWS_S3_ENDPOINT"],
        aws_access_key_id="testing",
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )


def test_uri_helpers():
    assert storage.is_s3("s3://b/k") and not storage.is_s3("/tmp/x")
    assert storage.split_s3("s3://b/a/b/") == ("b", "a/b")
    assert storage.join("s3://b/a/", "/c", "d") == "s3://b/a/c/d"
    with pytest.raises(ValueError, match="s3://BUCKET/KEY"):
        storage.split_s3("s3:///key")


def test_settings_from_env_with_overrides(monkeypatch):
    monkeypatch.setenv("AWS_S3_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_S3_BUCKET", "b1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "")
    monkeypatch.setenv("KILN_S3_PART_SIZE_MB", "16")
    s = S3Settings.from_env(bucket="b2", retries=None)
    assert (s.endpoint, s.bucket, s.region, s.part_size_mb, s.retries) == (
        "http://127.0.0.1:1", "b2", "us-east-1", 16, 5,
    )  # fmt: skip
    assert "secret" not in repr(S3Settings(secret_key="hunter2")).replace("secret_key", "")


@pytest.mark.parametrize("backend", ["s3", "local"])
def test_dir_roundtrip_list_exists_open(backend, request, tmp_path, monkeypatch):
    if backend == "s3":
        request.getfixturevalue("s3_server")
        base = f"s3://{os.environ['AWS_S3_BUCKET']}/runs/r1/model"
    else:
        monkeypatch.delenv("AWS_S3_ENDPOINT", raising=False)
        monkeypatch.setenv("KILN_S3_LOCAL_ROOT", str(tmp_path / "fake-s3"))
        base = "s3://kiln/runs/r1/model"
    files = _make_tree(tmp_path / "src")
    manifest = storage.upload_dir(tmp_path / "src", base)

    assert set(manifest["files"]) == set(files)
    assert manifest["total_bytes"] == sum(len(v) for v in files.values())
    assert storage.is_committed(base)
    listed = storage.list_files(base)
    assert listed == sorted(storage.join(base, r) for r in [*files, MANIFEST_NAME])
    assert storage.list_files(storage.join(base, "config.json")) == [base + "/config.json"]
    assert storage.exists(base) and storage.exists(base + "/tok/tokenizer.json")
    assert not storage.exists(base + "/nope") and storage.list_files(base + "/nope") == []
    with storage.open_read(base + "/model.safetensors") as f:
        assert f.read(10) == files["model.safetensors"][:10]
    assert (
        storage.recorded_sha256(base + "/config.json") == manifest["files"]["config.json"]["sha256"]
    )

    out = tmp_path / "dst"
    storage.download_dir(base, out)
    for rel, data in files.items():
        assert (out / rel).read_bytes() == data
    assert json.loads((out / MANIFEST_NAME).read_text())["files"] == manifest["files"]
    sha = storage.download_file(base + "/tok/tokenizer.json", tmp_path / "one.json")
    assert sha == manifest["files"]["tok/tokenizer.json"]["sha256"]


def test_file_upload_records_sha_in_metadata_and_multipart(s3_server, tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(11 << 20))  # > 2 parts of the 5 MiB minimum
    s = S3Settings.from_env(part_size_mb=5, max_concurrency=4)
    uri = f"s3://{s.bucket}/big.bin"
    digest = storage.upload_file(src, uri, s)
    head = _raw_s3().head_object(Bucket=s.bucket, Key="big.bin")
    assert head["Metadata"]["sha256"] == digest == storage.sha256_file(src)
    assert head["ETag"].strip('"').endswith("-3")  # really went multipart
    assert storage.download_file(uri, tmp_path / "back.bin", settings=s) == digest


def test_tampered_object_is_refused(s3_server, tmp_path):
    _make_tree(tmp_path / "src")
    bucket = os.environ["AWS_S3_BUCKET"]
    base = f"s3://{bucket}/m"
    storage.upload_dir(tmp_path / "src", base)
    # Overwrite the object's bytes, keeping its (now stale) sha256 metadata.
    head = _raw_s3().head_object(Bucket=bucket, Key="m/config.json")
    _raw_s3().put_object(
        Bucket=bucket, Key="m/config.json", Body=b'{"dim": 65}', Metadata=head["Metadata"]
    )
    with pytest.raises(IntegrityError, match="does not match"):
        storage.download_file(base + "/config.json", tmp_path / "c.json")
    assert not (tmp_path / "c.json").exists() and not (tmp_path / "c.json.part").exists()
    with pytest.raises(IntegrityError, match="config.json"):
        storage.download_dir(base, tmp_path / "dst")
    # A foreign object with no record at all is refused unless verification is turned off.
    _raw_s3().put_object(Bucket=bucket, Key="loose.txt", Body=b"x")
    with pytest.raises(IntegrityError, match="no recorded sha256"):
        storage.download_file(f"s3://{bucket}/loose.txt", tmp_path / "l.txt")
    storage.download_file(f"s3://{bucket}/loose.txt", tmp_path / "l.txt", verify=False)


def test_uncommitted_prefix_is_not_downloadable(s3_server, tmp_path):
    _make_tree(tmp_path / "src")
    base = f"s3://{os.environ['AWS_S3_BUCKET']}/half"
    storage.upload_file(tmp_path / "src/config.json", base + "/config.json")
    assert not storage.is_committed(base)
    with pytest.raises(IntegrityError, match="never committed"):
        storage.download_dir(base, tmp_path / "dst")
    storage.download_dir(base, tmp_path / "dst", verify=False)
    assert (tmp_path / "dst/config.json").exists()


def test_reupload_skips_unchanged_and_recommits(s3_server, tmp_path):
    files = _make_tree(tmp_path / "src")
    base = f"s3://{os.environ['AWS_S3_BUCKET']}/again"
    first = storage.upload_dir(tmp_path / "src", base)
    bucket = os.environ["AWS_S3_BUCKET"]
    before = _raw_s3().head_object(Bucket=bucket, Key="again/model.safetensors")["LastModified"]
    time.sleep(1.1)  # S3 timestamps have 1 s resolution
    (tmp_path / "src/config.json").write_bytes(b'{"dim": 128}')
    second = storage.upload_dir(tmp_path / "src", base)
    assert second["files"]["config.json"] != first["files"]["config.json"]
    assert second["files"]["model.safetensors"] == first["files"]["model.safetensors"]
    after = _raw_s3().head_object(Bucket=bucket, Key="again/model.safetensors")["LastModified"]
    assert after == before  # unchanged file was not uploaded again
    storage.download_dir(base, tmp_path / "dst")
    assert (tmp_path / "dst/config.json").read_bytes() == b'{"dim": 128}'
    assert (tmp_path / "dst/model.safetensors").read_bytes() == files["model.safetensors"]


def test_plain_local_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("KILN_S3_LOCAL_ROOT", raising=False)
    _make_tree(tmp_path / "src")
    storage.upload_dir(tmp_path / "src", str(tmp_path / "published"))
    assert storage.list_files(str(tmp_path / "published"))[-1].endswith("tokenizer.json")
    (tmp_path / "published/config.json").write_bytes(b"tampered")
    with pytest.raises(IntegrityError):
        storage.download_dir(str(tmp_path / "published"), tmp_path / "dst")
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        storage.upload_dir(tmp_path / "missing", str(tmp_path / "x"))


def test_settings_and_artifact_root_from_config(tmp_path, monkeypatch):
    from kiln.components.common.config import load_config

    monkeypatch.delenv("AWS_S3_BUCKET", raising=False)
    monkeypatch.setenv("AWS_S3_ENDPOINT", "http://127.0.0.1:9")
    cfg = load_config("tiny", overrides=["storage.part_size_mb=8", "storage.retries=2"])
    s = storage.settings_from_config(cfg.storage)
    assert (s.endpoint, s.part_size_mb, s.retries) == ("http://127.0.0.1:9", 8, 2)
    assert storage.artifact_root(cfg.storage, tmp_path) == str(tmp_path / "s3")
    monkeypatch.setenv("AWS_S3_BUCKET", "kb")
    assert storage.artifact_root(cfg.storage, tmp_path) == "s3://kb/kiln"
    cfg.storage.root = "s3://other/p"
    assert storage.artifact_root(cfg.storage, tmp_path) == "s3://other/p"
    with pytest.raises(ValueError, match="part_size_mb must be >= 5"):
        load_config("tiny", overrides=["storage.part_size_mb=1"])
