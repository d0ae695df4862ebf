"""One storage API over local paths and `s3://bucket/key`, with end-to-end sha256 integrity.

    from components.common import storage
    manifest = storage.upload_dir("out/model", "s3://kiln/models/run-1")   # committed marker last
    storage.download_dir("s3://kiln/models/run-1", "/tmp/model")           # verified per file

S3 settings come from the environment under the OpenShift AI data-connection names
(`AWS_S3_ENDPOINT`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`,
`AWS_S3_BUCKET`), overridable per call with `S3Settings`. Without an endpoint but with
`KILN_S3_LOCAL_ROOT` set, `s3://bucket/key` maps to `<root>/bucket/key`: a local stand-in with
the same API and the same integrity records (used by `kiln run` when no S3 is given).

Integrity: every uploaded file's sha256 is stored in the object metadata (`x-amz-meta-sha256`;
a `<file>.kiln-meta.json` sidecar for local targets) and, for directories, in a manifest
`_KILN_MANIFEST.json` written last. A prefix is *committed* only once that manifest exists, so an
interrupted upload never looks complete. Downloads go to a temporary file, are hashed and are
renamed into place only when the hash matches the record. Only this module imports boto3.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

log = logging.getLogger(__name__)

MANIFEST_NAME = "_KILN_MANIFEST.json"
SIDECAR_SUFFIX = ".kiln-meta.json"
_CHUNK = 8 << 20
T = TypeVar("T")


class IntegrityError(RuntimeError):
    """A downloaded object does not match its recorded sha256 (or has no record to check)."""


class StorageError(RuntimeError):
    """A storage operation failed for good (after retries), with the URI it was working on."""


@dataclass(frozen=True)
class S3Settings:
    """Where S3 is and how to talk to it. Defaults come from `from_env`."""

    endpoint: str = ""
    access_key: str = ""
    secret_key: str = dataclasses.field(default="", repr=False)
    region: str = "us-east-1"
    bucket: str = ""
    local_root: str = ""
    part_size_mb: int = 64
    max_concurrency: int = 8
    retries: int = 5
    retry_backoff_s: float = 0.5
    retry_max_backoff_s: float = 8.0
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0

    @classmethod
    def from_env(cls, **overrides: Any) -> S3Settings:
        """Settings from the data-connection env vars and `KILN_S3_*` tuning vars.

        Args:
            **overrides: field values that win over the environment; empty/None values are ignored.
        """
        env = os.environ
        base = cls(
            endpoint=env.get("AWS_S3_ENDPOINT", ""),
            access_key=env.get("AWS_ACCESS_KEY_ID", ""),
            secret_key=env.get("AWS_SECRET_ACCESS_KEY", ""),
            region=env.get("AWS_DEFAULT_REGION", "") or "us-east-1",
            bucket=env.get("AWS_S3_BUCKET", ""),
            local_root=env.get("KILN_S3_LOCAL_ROOT", ""),
        )
        tuned: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"KILN_S3_{f.name.upper()}")
            if raw and f.name not in {"endpoint", "local_root", "secret_key", "access_key"}:
                tuned[f.name] = type(getattr(base, f.name))(raw)
        tuned.update({k: v for k, v in overrides.items() if v not in (None, "")})
        return dataclasses.replace(base, **tuned)


def settings_from_config(storage_cfg: Any) -> S3Settings:
    """S3Settings from the env, overridden by a `StorageConfig` section (empty fields ignored)."""
    c = storage_cfg
    return S3Settings.from_env(
        endpoint=c.endpoint,
        region=c.region,
        part_size_mb=c.part_size_mb,
        max_concurrency=c.max_concurrency,
        retries=c.retries,
        retry_backoff_s=c.retry_backoff_s,
    )


def artifact_root(storage_cfg: Any, workdir: str | Path) -> str:
    """Where a run's artifacts go: `storage.root`, else s3://$AWS_S3_BUCKET/kiln when a
    bucket is configured, else the local directory WORKDIR/s3."""
    if storage_cfg.root:
        return storage_cfg.root
    s = settings_from_config(storage_cfg)
    if s.bucket:
        return f"s3://{s.bucket}/kiln"
    return str(Path(workdir) / "s3")


# ------------------------------------------------------------------------------------ URI helpers
def is_s3(uri: str) -> bool:
    """True for `s3://bucket/key` URIs (local paths and `file://` are not)."""
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b` → ("bucket", "a/b"). Raises ValueError when there is no bucket."""
    rest = str(uri)[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"{uri!r}: expected s3://BUCKET/KEY")
    return bucket, key.strip("/")


def join(uri: str, *parts: str) -> str:
    """Join URI/path segments with '/' (works for both s3:// URIs and local paths)."""
    out = str(uri).rstrip("/")
    for p in parts:
        out = f"{out}/{p.strip('/')}"
    return out


def default_uri(path: str, settings: S3Settings | None = None) -> str:
    """`s3://$AWS_S3_BUCKET/<path>` when a bucket is configured, else ''."""
    s = settings or S3Settings.from_env()
    return f"s3://{s.bucket}/{path.strip('/')}" if s.bucket else ""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a local file, read in 8 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _local_path(uri: str, s: S3Settings) -> Path | None:
    """The local path behind a URI: a plain path, file://, or s3:// under the local stand-in."""
    uri = str(uri)
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if not is_s3(uri):
        return Path(uri)
    if s.local_root and not s.endpoint:
        bucket, key = split_s3(uri)
        return Path(s.local_root) / bucket / key
    return None


# ---------------------------------------------------------------------------------- S3 plumbing
@functools.lru_cache(maxsize=8)
def _client(s: S3Settings) -> Any:
    import boto3
    from botocore.config import Config

    cfg = Config(
        region_name=s.region,
        connect_timeout=s.connect_timeout_s,
        read_timeout=s.read_timeout_s,
        # Our own loop (below) owns retries so the backoff is bounded and predictable.
        retries={"max_attempts": 2, "mode": "standard"},
        max_pool_connections=max(10, s.max_concurrency * 2),
        # boto3 >= 1.36 adds CRC checksums by default, which MinIO/Ceph/ODF and older servers
        # reject or mishandle; integrity is ours (sha256), so only send them when required.
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


def _transfer_config(s: S3Settings) -> Any:
    from boto3.s3.transfer import TransferConfig

    part = max(5, s.part_size_mb) << 20  # S3's minimum part size is 5 MiB
    return TransferConfig(
        multipart_threshold=part,
        multipart_chunksize=part,
        max_concurrency=s.max_concurrency,
        use_threads=s.max_concurrency > 1,
    )


def _is_transient(e: BaseException) -> bool:
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    cause = e.__context__ if type(e).__name__ == "S3UploadFailedError" else e
    if isinstance(cause, ConnectionError | HTTPClientError | OSError):
        return not isinstance(cause, FileNotFoundError | PermissionError)
    if type(cause).__name__ == "RetriesExceededError":
        return True
    if isinstance(cause, ClientError):
        code = str(cause.response.get("Error", {}).get("Code", ""))
        status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or code in {"SlowDown", "RequestTimeout", "Throttling"}
    return False


def _retry(
    s: S3Settings, what: str, fn: Callable[[], T], on_retry: Callable[[], None] | None = None
) -> T:
    """Run `fn`, retrying transient errors with exponential backoff; StorageError when out of tries."""
    delay = s.retry_backoff_s
    for attempt in range(1, s.retries + 1):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - classified below
            if not _is_transient(e):
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


def _abort_multipart(s: S3Settings, bucket: str, key: str) -> int:
    """Abort open multipart uploads of `key` (left by a failed attempt); best effort."""
    try:
        resp = _client(s).list_multipart_uploads(Bucket=bucket, Prefix=key)
        uploads = [u for u in resp.get("Uploads", []) if u["Key"] == key]
        for u in uploads:
            _client(s).abort_multipart_upload(Bucket=bucket, Key=key, UploadId=u["UploadId"])
        return len(uploads)
    except Exception as e:  # noqa: BLE001 - cleanup must never mask the real error
        log.warning("could not abort multipart uploads of s3://%s/%s: %s", bucket, key, e)
        return 0


def _head(s: S3Settings, uri: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    bucket, key = split_s3(uri)
    try:
        return _retry(s, f"head {uri}", lambda: _client(s).head_object(Bucket=bucket, Key=key))
    except ClientError as e:
        if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (403, 404):
            return None
        raise


# ------------------------------------------------------------------------------------ public API
def exists(uri: str, settings: S3Settings | None = None) -> bool:
    """True if `uri` is an existing file/object, or a directory/prefix with anything under it."""
    s = settings or S3Settings.from_env()
    local = _local_path(uri, s)
    if local is not None:
        return local.exists()
    return _head(s, uri) is not None or bool(_list_s3(s, uri, limit=1))


def _list_s3(s: S3Settings, uri: str, limit: int = 0) -> list[str]:
    bucket, key = split_s3(uri)
    prefix = f"{key}/" if key else ""

    def run() -> list[str]:
        out: list[str] = []
        for page in (
            _client(s).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        ):
            out += [f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", [])]
            if limit and len(out) >= limit:
                break
        return out

    return _retry(s, f"list {uri}", run)


def list_files(uri: str, settings: S3Settings | None = None) -> list[str]:
    """Every file under a directory/prefix, recursively, as full URIs/paths, sorted.

    A URI naming a single file/object lists just that file; a missing one lists nothing.
    """
    s = settings or S3Settings.from_env()
    local = _local_path(uri, s)
    if local is not None:
        if local.is_file():
            return [str(uri)]
        if not local.is_dir():
            return []
        base = str(uri).rstrip("/")
        rels = sorted(
            p.relative_to(local).as_posix()
            for p in local.rglob("*")
            if p.is_file() and not p.name.endswith(SIDECAR_SUFFIX)
        )
        return [f"{base}/{r}" for r in rels]
    found = _list_s3(s, uri)
    if not found and _head(s, uri) is not None:
        return [str(uri)]
    return sorted(found)


def open_read(uri: str, settings: S3Settings | None = None) -> IO[bytes]:
    """A binary, streaming file object for reading (close it, or use `with`)."""
    s = settings or S3Settings.from_env()
    local = _local_path(uri, s)
    if local is not None:
        return open(local, "rb")
    bucket, key = split_s3(uri)
    resp = _retry(s, f"open {uri}", lambda: _client(s).get_object(Bucket=bucket, Key=key))
    return resp["Body"]


def recorded_sha256(uri: str, settings: S3Settings | None = None) -> str | None:
    """The sha256 recorded at upload time: object metadata / sidecar, else the enclosing manifest."""
    s = settings or S3Settings.from_env()
    local = _local_path(uri, s)
    if local is not None:
        side = local.with_name(local.name + SIDECAR_SUFFIX)
        if side.is_file():
            return json.loads(side.read_text()).get("sha256")
    else:
        head = _head(s, uri)
        if head and head.get("Metadata", {}).get("sha256"):
            return head["Metadata"]["sha256"]
    return _sha_from_manifests(uri, s)


def _sha_from_manifests(uri: str, s: S3Settings) -> str | None:
    """Walk up the URI's parents looking for a committed manifest that lists the file."""
    parts = str(uri).rstrip("/").split("/")
    for i in range(len(parts) - 1, 2 if is_s3(uri) else 0, -1):
        prefix, rel = "/".join(parts[:i]), "/".join(parts[i:])
        manifest = read_manifest(prefix, s)
        if manifest and rel in manifest["files"]:
            return manifest["files"][rel]["sha256"]
    return None


def upload_file(local: str | Path, uri: str, settings: S3Settings | None = None) -> str:
    """Upload one file (multipart when large) with its sha256 in the metadata; returns the sha256.

    Transient failures are retried with backoff; multipart uploads left open by a failed
    attempt are aborted. Raises StorageError when the target stays unreachable.
    """
    s = settings or S3Settings.from_env()
    local = Path(local)
    if not local.is_file():
        raise FileNotFoundError(f"upload source {local} is not a file")
    digest = sha256_file(local)
    target = _local_path(uri, s)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        shutil.copyfile(local, tmp)
        os.replace(tmp, target)
        sidecar = {"sha256": digest, "size": local.stat().st_size}
        target.with_name(target.name + SIDECAR_SUFFIX).write_text(json.dumps(sidecar))
        return digest
    bucket, key = split_s3(uri)
    extra = {"Metadata": {"sha256": digest}}

    def put() -> None:
        _client(s).upload_file(str(local), bucket, key, ExtraArgs=extra, Config=_transfer_config(s))

    try:
        _retry(s, f"upload {local} → {uri}", put, on_retry=lambda: _abort_multipart(s, bucket, key))
    except Exception:
        _abort_multipart(s, bucket, key)
        raise
    return digest


def download_file(
    uri: str, local: str | Path, verify: bool = True, settings: S3Settings | None = None
) -> str:
    """Download one file; with `verify`, refuse it unless its sha256 matches the record.

    Returns the sha256 of the downloaded bytes. Raises IntegrityError on a mismatch or when
    nothing was recorded for the object (pass verify=False for foreign objects).
    """
    s = settings or S3Settings.from_env()
    expected = recorded_sha256(uri, s) if verify else None
    if verify and not expected:
        raise IntegrityError(f"{uri}: no recorded sha256 (metadata or manifest) to verify against")
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(local.name + ".part")
    source = _local_path(uri, s)
    if source is not None:
        if not source.is_file():
            raise FileNotFoundError(f"{uri}: no such file")
        shutil.copyfile(source, tmp)
    else:
        bucket, key = split_s3(uri)
        _retry(
            s,
            f"download {uri}",
            lambda: _client(s).download_file(bucket, key, str(tmp), Config=_transfer_config(s)),
        )
    got = sha256_file(tmp)
    if expected and got != expected:
        tmp.unlink(missing_ok=True)
        raise IntegrityError(f"{uri}: sha256 {got} does not match the recorded {expected}; refused")
    os.replace(tmp, local)
    return got


def read_manifest(uri: str, settings: S3Settings | None = None) -> dict[str, Any] | None:
    """The committed manifest of a directory/prefix, or None when it was never committed."""
    s = settings or S3Settings.from_env()
    m_uri = join(uri, MANIFEST_NAME)
    local = _local_path(m_uri, s)
    if local is not None:
        return json.loads(local.read_text()) if local.is_file() else None
    if _head(s, m_uri) is None:
        return None
    with open_read(m_uri, s) as f:
        return json.loads(f.read())


def is_committed(uri: str, settings: S3Settings | None = None) -> bool:
    """True once `upload_dir` finished writing the prefix's manifest (its commit marker)."""
    return read_manifest(uri, settings) is not None


def _delete(uri: str, s: S3Settings) -> None:
    local = _local_path(uri, s)
    if local is not None:
        local.unlink(missing_ok=True)
        return
    bucket, key = split_s3(uri)
    _retry(s, f"delete {uri}", lambda: _client(s).delete_object(Bucket=bucket, Key=key))


def upload_dir(
    local_dir: str | Path, uri: str, settings: S3Settings | None = None
) -> dict[str, Any]:
    """Upload a directory tree and commit it with a manifest written last; returns the manifest.

    An existing manifest is removed first, so a re-upload interrupted halfway is not mistaken
    for the earlier complete one. Files whose recorded sha256 already matches are skipped.
    """
    s = settings or S3Settings.from_env()
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise FileNotFoundError(f"upload source {local_dir} is not a directory")
    m_uri = join(uri, MANIFEST_NAME)
    if exists(m_uri, s):
        _delete(m_uri, s)
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(local_dir).as_posix()
        if rel == MANIFEST_NAME or rel.endswith(SIDECAR_SUFFIX):
            continue
        digest = sha256_file(path)
        target = join(uri, rel)
        if _own_sha(target, s) != digest:
            upload_file(path, target, s)
        files[rel] = {"sha256": digest, "size": path.stat().st_size}
    manifest = {
        "kiln_manifest": 1,
        "uri": str(uri),
        "created_unix": time.time(),
        "total_bytes": sum(f["size"] for f in files.values()),
        "files": files,
    }
    tmp = local_dir.parent / f".{local_dir.name}{MANIFEST_NAME}"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    try:
        upload_file(tmp, m_uri, s)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("committed %d files (%d bytes) to %s", len(files), manifest["total_bytes"], uri)
    return manifest


def _own_sha(uri: str, s: S3Settings) -> str | None:
    """sha256 recorded on the object itself (not via a manifest); None when absent."""
    local = _local_path(uri, s)
    if local is not None:
        side = local.with_name(local.name + SIDECAR_SUFFIX)
        return json.loads(side.read_text()).get("sha256") if side.is_file() else None
    head = _head(s, uri)
    return head.get("Metadata", {}).get("sha256") if head else None


def download_dir(
    uri: str, local_dir: str | Path, verify: bool = True, settings: S3Settings | None = None
) -> dict[str, Any]:
    """Download a committed directory/prefix; every file is checked against the manifest.

    Raises IntegrityError when the prefix has no manifest (never committed) and `verify` is
    set, or when any file's sha256 differs. Returns the manifest (a listing when unverified).
    """
    s = settings or S3Settings.from_env()
    local_dir = Path(local_dir)
    manifest = read_manifest(uri, s)
    if manifest is None:
        if verify:
            raise IntegrityError(f"{uri}: no {MANIFEST_NAME}; the upload was never committed")
        prefix = str(uri).rstrip("/") + "/"
        rels = [u[len(prefix) :] for u in list_files(uri, s)]
        manifest = {"files": {r: {} for r in rels}}
    for rel, meta in manifest["files"].items():
        got = download_file(join(uri, rel), local_dir / rel, verify=False, settings=s)
        if verify and got != meta["sha256"]:
            (local_dir / rel).unlink(missing_ok=True)
            raise IntegrityError(
                f"{join(uri, rel)}: sha256 {got} does not match the manifest's {meta['sha256']}; refused"
            )
    if verify:
        (local_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest
