"""`kiln artifacts` end to end against real moto S3 and MLflow servers."""

from __future__ import annotations

import os
import uuid

import boto3
import pytest

from kiln.components.common import storage
from kiln.components.common.registry import ModelRegistry
from kiln.pipelines.cli import main


@pytest.fixture
def published(s3_server, mlflow_env, tmp_path):
    """A fake model dir uploaded to S3 and registered as a version (alias candidate)."""
    src = tmp_path / "model"
    src.mkdir()
    files = {"config.json": b'{"dim": 64}', "model.safetensors": os.urandom(50_000)}
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    uri = f"s3://{os.environ['AWS_S3_BUCKET']}/models/run-1/model"
    manifest = storage.upload_dir(src, uri)
    name = f"kiln-cli-{uuid.uuid4().hex[:8]}"
    ModelRegistry().register(name, uri, training_run_id="run-1", metrics={"val_loss": 2.0})
    return {"uri": uri, "files": files, "manifest": manifest, "name": name}


def _tamper(uri: str, data: bytes) -> None:
    bucket, key = storage.split_s3(uri)
    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ["AWS_S3_ENDPOINT"],
        aws_access_key_id="testing",
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    meta = s3.head_object(Bucket=bucket, Key=key)["Metadata"]
    s3.put_object(Bucket=bucket, Key=key, Body=data, Metadata=meta)


def test_list_shows_files_with_recorded_sha(published, capsys):
    assert main(["artifacts", "list", published["uri"]]) == 0
    out, err = capsys.readouterr()
    sha = published["manifest"]["files"]["config.json"]["sha256"]
    assert f"{sha[:16]} " in out and published["uri"] + "/config.json" in out
    assert "3 files; committed" in err  # two files + the manifest


def test_get_dir_file_and_registered_version(published, tmp_path, capsys):
    assert main(["artifacts", "get", published["uri"], str(tmp_path / "a")]) == 0
    assert "all sha256 verified" in capsys.readouterr().out
    for rel, data in published["files"].items():
        assert (tmp_path / "a" / rel).read_bytes() == data

    (tmp_path / "one").mkdir()
    assert main(["artifacts", "get", published["uri"] + "/config.json", str(tmp_path / "one")]) == 0
    assert (tmp_path / "one/config.json").read_bytes() == published["files"]["config.json"]

    ref = f"models:/{published['name']}@candidate"
    assert main(["artifacts", "get", ref, str(tmp_path / "m")]) == 0
    assert f"{ref} → {published['uri']}" in capsys.readouterr().err
    assert (tmp_path / "m/model.safetensors").read_bytes() == published["files"][
        "model.safetensors"
    ]


def test_get_refuses_tampered_object(published, tmp_path, capsys):
    _tamper(published["uri"] + "/model.safetensors", b"not the weights")
    ref = f"models:/{published['name']}@candidate"
    assert main(["artifacts", "get", ref, str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "refused" in err and "model.safetensors" in err and "does not match" in err
    assert not (tmp_path / "m/model.safetensors").exists()
    one = published["uri"] + "/model.safetensors"
    assert main(["artifacts", "get", one, str(tmp_path / "x.bin")]) == 1
    assert not (tmp_path / "x.bin").exists()


def test_clear_errors(published, tmp_path, capsys):
    assert main(["artifacts", "list", published["uri"] + "-nope"]) == 2
    assert "no files there" in capsys.readouterr().err
    assert main(["artifacts", "get", f"models:/{published['name']}@champion", str(tmp_path)]) == 2
    assert "has no alias 'champion'" in capsys.readouterr().err
