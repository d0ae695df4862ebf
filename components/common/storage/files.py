"""File-level storage API: the same calls for local paths, the local S3 stand-in and real S3.

Every upload records its sha256 (S3 object metadata, or a `<file>.kiln-meta.json` sidecar for
local targets); every verified download is hashed in a temporary file and only renamed into
place when it matches the record, so a tampered object never reaches its destination.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import IO, Any

from kiln.components.common.storage import s3
from kiln.components.common.storage.settings import (
    MANIFEST_NAME,
    SIDECAR_SUFFIX,
    IntegrityError,
    S3Settings,
    is_s3,
    join,
    local_path,
    sha256_file,
)


def exists(uri: str, settings: S3Settings | None = None) -> bool:
    """True if `uri` is an existing file/object, or a directory/prefix with anything under it."""
    s = settings or S3Settings.from_env()
    local = local_path(uri, s)
    if local is not None:
        return local.exists()
    return s3.head(s, uri) is not None or bool(s3.list_under(s, uri, limit=1))


def list_files(uri: str, settings: S3Settings | None = None) -> list[str]:
    """Every file under a directory/prefix, recursively, as full URIs/paths, sorted.

    A URI naming a single file/object lists just that file; a missing one lists nothing.
    """
    s = settings or S3Settings.from_env()
    local = local_path(uri, s)
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
    found = s3.list_under(s, uri)
    if not found and s3.head(s, uri) is not None:
        return [str(uri)]
    return sorted(found)


def open_read(uri: str, settings: S3Settings | None = None) -> IO[bytes]:
    """A binary, streaming file object for reading (close it, or use `with`)."""
    s = settings or S3Settings.from_env()
    local = local_path(uri, s)
    return open(local, "rb") if local is not None else s3.open_body(s, uri)


def read_manifest(uri: str, settings: S3Settings | None = None) -> dict[str, Any] | None:
    """The committed manifest of a directory/prefix, or None when it was never committed."""
    s = settings or S3Settings.from_env()
    m_uri = join(uri, MANIFEST_NAME)
    local = local_path(m_uri, s)
    if local is not None:
        return json.loads(local.read_text()) if local.is_file() else None
    if s3.head(s, m_uri) is None:
        return None
    with s3.open_body(s, m_uri) as f:
        return json.loads(f.read())


def own_sha256(uri: str, settings: S3Settings | None = None) -> str | None:
    """The sha256 recorded on the object itself (metadata / sidecar), not via a manifest."""
    s = settings or S3Settings.from_env()
    local = local_path(uri, s)
    if local is not None:
        side = local.with_name(local.name + SIDECAR_SUFFIX)
        return json.loads(side.read_text()).get("sha256") if side.is_file() else None
    head = s3.head(s, uri)
    return head.get("Metadata", {}).get("sha256") if head else None


def recorded_sha256(uri: str, settings: S3Settings | None = None) -> str | None:
    """The sha256 recorded at upload: on the object, else in the nearest enclosing manifest."""
    s = settings or S3Settings.from_env()
    own = own_sha256(uri, s)
    if own:
        return own
    parts = str(uri).rstrip("/").split("/")
    for i in range(len(parts) - 1, 2 if is_s3(uri) else 0, -1):  # walk up the parents
        prefix, rel = "/".join(parts[:i]), "/".join(parts[i:])
        manifest = read_manifest(prefix, s)
        if manifest and rel in manifest["files"]:
            return manifest["files"][rel]["sha256"]
    return None


def upload_file(
    local: str | Path,
    uri: str,
    settings: S3Settings | None = None,
    sha256: str | None = None,
) -> str:
    """Upload one file (multipart when large) with its sha256 recorded; returns the sha256.

    Transient failures are retried with backoff; multipart uploads left open by a failed
    attempt are aborted. Raises StorageError when the target stays unreachable.

    Args:
        local: the file to upload.
        uri: destination (s3://bucket/key, or a local path).
        settings: S3 settings (default: from the environment).
        sha256: the file's sha256 when the caller already computed it (saves a read).
    """
    s = settings or S3Settings.from_env()
    local = Path(local)
    if not local.is_file():
        raise FileNotFoundError(f"upload source {local} is not a file")
    digest = sha256 or sha256_file(local)
    target = local_path(uri, s)
    if target is None:
        s3.upload(s, local, uri, digest)
        return digest
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    shutil.copyfile(local, tmp)
    os.replace(tmp, target)
    sidecar = {"sha256": digest, "size": local.stat().st_size}
    target.with_name(target.name + SIDECAR_SUFFIX).write_text(json.dumps(sidecar))
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
    source = local_path(uri, s)
    if source is None:
        s3.download(s, uri, tmp)
    elif source.is_file():
        shutil.copyfile(source, tmp)
    else:
        raise FileNotFoundError(f"{uri}: no such file")
    got = sha256_file(tmp)
    if expected and got != expected:
        tmp.unlink(missing_ok=True)
        raise IntegrityError(f"{uri}: sha256 {got} does not match the recorded {expected}; refused")
    os.replace(tmp, local)
    return got


def delete(uri: str, settings: S3Settings | None = None) -> None:
    """Delete one file/object (and its sidecar); no error when it does not exist."""
    s = settings or S3Settings.from_env()
    local = local_path(uri, s)
    if local is None:
        s3.delete(s, uri)
        return
    local.unlink(missing_ok=True)
    local.with_name(local.name + SIDECAR_SUFFIX).unlink(missing_ok=True)
