"""The S3 side of storage: a tuned boto3 client, bounded retries, and the few object
operations `files.py` needs. The only module in Kiln that imports boto3.

Works against AWS and S3-compatible servers (MinIO, Ceph RGW, ODF, moto): path-style
addressing when an endpoint is given, and boto3 >= 1.36's default CRC checksums turned down to
"when_required" (third-party servers reject or mishandle them; integrity is our sha256).
"""

from __future__ import annotations

import functools
import io
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

from kiln.components.common.storage.settings import S3Settings, StorageError, split_s3

log = logging.getLogger("kiln.storage")
T = TypeVar("T")


@functools.lru_cache(maxsize=8)
def client(s: S3Settings) -> Any:
    """A boto3 S3 client for these settings (cached: settings are frozen and hashable)."""
    import boto3
    from botocore.config import Config

    cfg = Config(
        region_name=s.region,
        connect_timeout=s.connect_timeout_s,
        read_timeout=s.read_timeout_s,
        # Our own loop (`retry`) owns retries, so the backoff is bounded and predictable.
        retries={"max_attempts": 2, "mode": "standard"},
        max_pool_connections=max(10, s.max_concurrency * s.file_concurrency + 4),
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"} if s.endpoint else {},
    )
    return boto3.client(
        "s3",
        endpoint_url=s.endpoint or None,
        aws_access_key_id=s.access_key or None,
        aws_secret_access_key=s.secret_key or None,
        config=cfg,
    )


def transfer_config(s: S3Settings) -> Any:
    """Multipart above one part size, `max_concurrency` parts in flight."""
    from boto3.s3.transfer import TransferConfig

    part = max(5, s.part_size_mb) << 20  # S3's minimum part size is 5 MiB
    return TransferConfig(
        multipart_threshold=part,
        multipart_chunksize=part,
        max_concurrency=s.max_concurrency,
        use_threads=s.max_concurrency > 1,
    )


def is_transient(e: BaseException) -> bool:
    """Connection trouble, timeouts, 5xx, throttling and truncated replies are worth retrying;
    the rest is not."""
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        HTTPClientError,
        IncompleteReadError,
    )

    # boto3's upload_file re-raises ClientError as S3UploadFailedError (no `from`).
    cause = e.__context__ if type(e).__name__ == "S3UploadFailedError" else e
    if isinstance(cause, ConnectionError | HTTPClientError | IncompleteReadError | OSError):
        return not isinstance(cause, FileNotFoundError | PermissionError)
    if type(cause).__name__ == "RetriesExceededError":
        return True
    # A 200 whose body was cut off parses as an empty result, and boto3's transfer manager then
    # fails on a field S3 always returns (KeyError 'UploadId' for CreateMultipartUpload).
    if isinstance(cause, KeyError):
        return True
    if isinstance(cause, ClientError):
        code = str(cause.response.get("Error", {}).get("Code", ""))
        status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or code in {"SlowDown", "RequestTimeout", "Throttling"}
    return False


def retry(
    s: S3Settings, what: str, fn: Callable[[], T], on_retry: Callable[[], None] | None = None
) -> T:
    """Run `fn`, retrying transient errors with doubling backoff; StorageError when out of tries."""
    delay = s.retry_backoff_s
    for attempt in range(1, s.retries + 1):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - classified below
            if not is_transient(e):
                raise
            if attempt == s.retries:
                raise StorageError(
                    f"{what}: S3 at {s.endpoint or 'AWS'} still failing after {s.retries} "
                    f"attempts ({type(e).__name__}: {e})"
                ) from e
            log.warning("%s: %s; retry %d/%d in %.1fs", what, e, attempt, s.retries - 1, delay)
            time.sleep(delay)
            delay = min(delay * 2, s.retry_max_backoff_s)
            if on_retry:
                on_retry()
    raise AssertionError("unreachable")


def abort_multipart(s: S3Settings, bucket: str, key: str) -> int:
    """Abort open multipart uploads of `key` (left by a failed attempt); best effort."""
    try:
        resp = client(s).list_multipart_uploads(Bucket=bucket, Prefix=key)
        uploads = [u for u in resp.get("Uploads", []) if u["Key"] == key]
        for u in uploads:
            client(s).abort_multipart_upload(Bucket=bucket, Key=key, UploadId=u["UploadId"])
        return len(uploads)
    except Exception as e:  # noqa: BLE001 - cleanup must never mask the real error
        log.warning("could not abort multipart uploads of s3://%s/%s: %s", bucket, key, e)
        return 0


def head(s: S3Settings, uri: str) -> dict[str, Any] | None:
    """The object's HEAD response (with `Metadata`), or None when there is no such object."""
    from botocore.exceptions import ClientError

    bucket, key = split_s3(uri)
    if not key:  # a bucket is not an object
        return None
    try:
        return retry(s, f"head {uri}", lambda: client(s).head_object(Bucket=bucket, Key=key))
    except ClientError as e:
        if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (403, 404):
            return None
        raise


def list_under(s: S3Settings, uri: str, limit: int = 0) -> list[str]:
    """URIs of every object under the prefix `uri`/ (stop early after `limit` when > 0)."""
    bucket, key = split_s3(uri)
    prefix = f"{key}/" if key else ""

    def run() -> list[str]:
        out: list[str] = []
        pages = client(s).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            out += [f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", [])]
            if limit and len(out) >= limit:
                break
        return out

    return retry(s, f"list {uri}", run)


def open_body(s: S3Settings, uri: str) -> IO[bytes]:
    """The object as a buffered binary stream that survives dropped connections."""
    return io.BufferedReader(_ResumableBody(s, uri), buffer_size=1 << 20)


class _ResumableBody(io.RawIOBase):
    """A GET body that, when the connection drops mid-stream, re-opens the object with a
    `Range` from the current offset (with the usual retries) and carries on: a long streaming
    read (token shards during training) survives a blip instead of failing the job."""

    def __init__(self, s: S3Settings, uri: str) -> None:
        self._s, self._uri = s, uri
        self._bucket, self._key = split_s3(uri)
        self._pos = 0
        self._body = self._open()

    def _open(self) -> Any:
        kw = {"Range": f"bytes={self._pos}-"} if self._pos else {}
        get = lambda: client(self._s).get_object(Bucket=self._bucket, Key=self._key, **kw)  # noqa: E731
        return retry(self._s, f"open {self._uri} at byte {self._pos}", get)["Body"]

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        for attempt in range(1, self._s.retries + 1):
            try:
                data = self._body.read(len(buf))
                break
            except Exception as e:  # noqa: BLE001 - classified by is_transient
                if not is_transient(e) or attempt == self._s.retries:
                    raise
                log.warning("read %s at byte %d: %s; re-opening", self._uri, self._pos, e)
                self._body.close()
                time.sleep(self._s.retry_backoff_s)
                self._body = self._open()
        buf[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def upload(s: S3Settings, local: Path, uri: str, sha256: str) -> None:
    """Upload with the sha256 in the metadata; abort multipart leftovers of failed attempts."""
    bucket, key = split_s3(uri)
    extra = {"Metadata": {"sha256": sha256}}

    def put() -> None:
        client(s).upload_file(str(local), bucket, key, ExtraArgs=extra, Config=transfer_config(s))

    try:
        retry(s, f"upload {local} → {uri}", put, on_retry=lambda: abort_multipart(s, bucket, key))
    except Exception:
        abort_multipart(s, bucket, key)
        raise


def download(s: S3Settings, uri: str, local: Path) -> None:
    """Download (multipart ranges when large) to `local`."""
    bucket, key = split_s3(uri)
    retry(
        s,
        f"download {uri}",
        lambda: client(s).download_file(bucket, key, str(local), Config=transfer_config(s)),
    )


def delete(s: S3Settings, uri: str) -> None:
    """Delete one object (no error when it is already gone)."""
    bucket, key = split_s3(uri)
    retry(s, f"delete {uri}", lambda: client(s).delete_object(Bucket=bucket, Key=key))
