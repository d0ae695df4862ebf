"""Fault tests: S3 unreachable during an upload (short → completes and verifies; long → a clear
error and no commit marker). A TcpProxy between the client and moto makes S3 "unreachable"."""

from __future__ import annotations

import http.client
import http.server
import os
import threading
import time

import boto3
import pytest

from kiln.components.common import storage
from kiln.components.common.storage import S3Settings, StorageError


def _tree(root, n_files=4, size=6 << 20):
    root.mkdir(parents=True)
    for i in range(n_files):
        (root / f"part-{i}.bin").write_bytes(os.urandom(size))


def _settings(**kw):
    # 5 tries, 0.4 s doubling: retries cover ~0.4+0.8+1.6+3.2 = 6 s of outage.
    base = dict(part_size_mb=5, max_concurrency=2, retries=5, retry_backoff_s=0.4)
    base.update(kw)
    return S3Settings.from_env(connect_timeout_s=1, read_timeout_s=2, **base)


def _open_multipart_uploads(s):
    raw = boto3.client(
        "s3",
        endpoint_url=os.environ["AWS_S3_ENDPOINT"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    return raw.list_multipart_uploads(Bucket=s.bucket).get("Uploads", [])


def test_short_outage_during_upload_completes_and_verifies(s3_proxy, tmp_path, caplog):
    caplog.set_level("WARNING", logger="kiln.storage")
    _tree(tmp_path / "model")
    s = _settings()
    uri = f"s3://{s.bucket}/short/model"
    s3_proxy.outage_after(n_bytes=8 << 20, seconds=2.0)  # mid-upload, whatever the speed
    t0 = time.monotonic()
    manifest = storage.upload_dir(tmp_path / "model", uri, s)
    assert s3_proxy.outages == 1 and time.monotonic() - t0 > 2.0
    assert any("retry" in r.getMessage() for r in caplog.records)
    assert storage.is_committed(uri, s)
    storage.download_dir(uri, tmp_path / "back", settings=s)
    for rel, meta in manifest["files"].items():
        assert storage.sha256_file(tmp_path / "back" / rel) == meta["sha256"]
    assert _open_multipart_uploads(s) == []  # failed attempts' uploads were aborted


def test_long_outage_fails_clearly_without_commit_marker(s3_proxy, tmp_path):
    _tree(tmp_path / "model", n_files=3)
    s = _settings(retries=3, retry_backoff_s=0.3)
    uri = f"s3://{s.bucket}/long/model"
    s3_proxy.pause()
    try:
        with pytest.raises(StorageError, match=r"still failing after 3 attempts"):
            storage.upload_dir(tmp_path / "model", uri, s)
    finally:
        s3_proxy.resume()
    assert not storage.is_committed(uri, s)
    assert not storage.exists(storage.join(uri, storage.MANIFEST_NAME), s)


def test_outage_midway_leaves_no_marker_and_rerun_commits(s3_proxy, tmp_path):
    _tree(tmp_path / "model", n_files=4)
    s = _settings(retries=2, retry_backoff_s=0.2)
    uri = f"s3://{s.bucket}/mid/model"
    s3_proxy.outage_after(n_bytes=10 << 20, seconds=3.0)  # retries give up after ~0.2 s
    with pytest.raises(StorageError):
        storage.upload_dir(tmp_path / "model", uri, s)
    assert s3_proxy.outages == 1
    while s3_proxy.paused.is_set():
        time.sleep(0.1)
    assert not storage.is_committed(uri, s)
    storage.upload_dir(tmp_path / "model", uri, s)  # the re-run skips what already landed
    assert storage.is_committed(uri, s)
    storage.download_dir(uri, tmp_path / "back", settings=s)


def test_errors_and_logs_never_carry_the_secret(s3_proxy, secret_canary, tmp_path, caplog):
    caplog.set_level("DEBUG")
    (tmp_path / "f.bin").write_bytes(b"x" * 1000)
    s = _settings(retries=2, retry_backoff_s=0.1)
    assert s.secret_key == secret_canary.value
    s3_proxy.pause()
    try:
        with pytest.raises(StorageError) as err:
            storage.upload_file(tmp_path / "f.bin", f"s3://{s.bucket}/f.bin", s)
    finally:
        s3_proxy.resume()
    secret_canary.assert_absent(str(err.value) + repr(s), "the StorageError / settings repr")
    secret_canary.assert_absent(caplog.text, "log records")


def test_streaming_read_survives_a_dropped_connection(s3_proxy, tmp_path, caplog):
    caplog.set_level("WARNING", logger="kiln.storage")
    data = os.urandom(24 << 20)  # well beyond socket buffers, so the drop lands mid-body
    (tmp_path / "shard.bin").write_bytes(data)
    s = _settings()
    uri = f"s3://{s.bucket}/shards/shard.bin"
    storage.upload_file(tmp_path / "shard.bin", uri, s)
    with storage.open_read(uri, s) as f:
        head = f.read(1 << 20)
        s3_proxy.pause()  # drop the connection mid-stream; back shortly
        threading.Timer(0.5, s3_proxy.resume).start()
        rest = f.read()
    assert head + rest == data
    assert any("re-opening" in r.getMessage() for r in caplog.records)


class _CutCreateMultipartUpload(http.server.BaseHTTPRequestHandler):
    """An HTTP front for moto that answers the first CreateMultipartUpload with a 200 and no
    body (a reply cut off after its status line) and passes every other request through."""

    protocol_version = "HTTP/1.1"
    upstream = ""  # host:port of moto
    cut = 1

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.command == "POST" and "uploads" in self.path and type(self).cut:
            type(self).cut -= 1
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        conn = http.client.HTTPConnection(self.upstream)
        conn.request(self.command, self.path, body, dict(self.headers))
        reply = conn.getresponse()
        data = reply.read()
        conn.close()
        self.send_response(reply.status)
        for name, value in reply.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    def log_message(self, *args) -> None:
        pass


def test_a_cut_off_create_multipart_reply_is_retried(s3_server, tmp_path, monkeypatch, caplog):
    caplog.set_level("WARNING", logger="kiln.storage")
    handler = type("Front", (_CutCreateMultipartUpload,), {"upstream": s3_server.split("://")[1]})
    front = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=front.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("AWS_S3_ENDPOINT", f"http://127.0.0.1:{front.server_address[1]}")
        _tree(tmp_path / "model", n_files=1, size=12 << 20)  # over part_size: multipart
        s = _settings()
        uri = f"s3://{s.bucket}/cut/model"
        manifest = storage.upload_dir(tmp_path / "model", uri, s)
        assert handler.cut == 0  # the cut reply was served
        assert any("retry" in r.getMessage() for r in caplog.records)
        storage.download_dir(uri, tmp_path / "back", settings=s)
        for rel, meta in manifest["files"].items():
            assert storage.sha256_file(tmp_path / "back" / rel) == meta["sha256"]
    finally:
        front.shutdown()
        front.server_close()
