"""Directory-level storage: upload a tree and *commit* it with a manifest written last.

The manifest (`_KILN_MANIFEST.json`: per-file sha256 and size) is the commit marker. It is
deleted before a re-upload starts and written only after every file landed, so a prefix whose
upload failed halfway never looks complete, and `download_dir` refuses it.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kiln.components.common.storage.files import (
    delete,
    download_file,
    exists,
    list_files,
    own_sha256,
    read_manifest,
    upload_file,
)
from kiln.components.common.storage.settings import (
    MANIFEST_NAME,
    SIDECAR_SUFFIX,
    IntegrityError,
    S3Settings,
    join,
    sha256_file,
)

log = logging.getLogger("kiln.storage")


def is_committed(uri: str, settings: S3Settings | None = None) -> bool:
    """True once `upload_dir` finished writing the prefix's manifest (its commit marker)."""
    return read_manifest(uri, settings) is not None


def upload_dir(
    local_dir: str | Path, uri: str, settings: S3Settings | None = None
) -> dict[str, Any]:
    """Upload a directory tree and commit it with a manifest written last; returns the manifest.

    An existing manifest is removed first, so a re-upload interrupted halfway is not mistaken
    for the earlier complete one. Files whose recorded sha256 already matches are skipped, so
    re-running after a failure only sends what is missing.
    """
    s = settings or S3Settings.from_env()
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise FileNotFoundError(f"upload source {local_dir} is not a directory")
    m_uri = join(uri, MANIFEST_NAME)
    if exists(m_uri, s):
        delete(m_uri, s)
    paths = sorted(p for p in local_dir.rglob("*") if p.is_file())
    rels = [p.relative_to(local_dir).as_posix() for p in paths]
    todo = [
        (p, r) for p, r in zip(paths, rels, strict=True)
        if r != MANIFEST_NAME and not r.endswith(SIDECAR_SUFFIX)
    ]  # fmt: skip

    def put(item: tuple[Path, str]) -> tuple[str, dict[str, Any]]:
        path, rel = item
        digest, target = sha256_file(path), join(uri, rel)
        if own_sha256(target, s) != digest:  # already there from an earlier attempt: skip
            upload_file(path, target, s, sha256=digest)
        return rel, {"sha256": digest, "size": path.stat().st_size}

    # Several files in flight (each file also sends its parts in parallel when large).
    with ThreadPoolExecutor(max(1, min(s.file_concurrency, len(todo)))) as pool:
        files = dict(pool.map(put, todo))
    manifest = {
        "kiln_manifest": 1,
        "uri": str(uri),
        "created_unix": time.time(),
        "total_bytes": sum(f["size"] for f in files.values()),
        "files": files,
    }
    with tempfile.TemporaryDirectory(prefix="kiln-manifest-") as tmp:
        path = Path(tmp) / MANIFEST_NAME
        path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
        upload_file(path, m_uri, s)  # the commit marker: strictly after every file landed
    log.info("committed %d files (%d bytes) to %s", len(files), manifest["total_bytes"], uri)
    return manifest


def download_dir(
    uri: str, local_dir: str | Path, verify: bool = True, settings: S3Settings | None = None
) -> dict[str, Any]:
    """Download a committed directory/prefix; every file is checked against the manifest.

    Raises IntegrityError when the prefix has no manifest (never committed) and `verify` is
    set, or when any file's sha256 differs (that file is not left in `local_dir`). Returns the
    manifest (a bare listing when unverified and uncommitted).
    """
    s = settings or S3Settings.from_env()
    local_dir = Path(local_dir)
    manifest = read_manifest(uri, s)
    if manifest is None:
        if verify:
            raise IntegrityError(f"{uri}: no {MANIFEST_NAME}; the upload was never committed")
        prefix = str(uri).rstrip("/") + "/"
        manifest = {"files": {u[len(prefix) :]: {} for u in list_files(uri, s)}}
    for rel, meta in manifest["files"].items():
        target = local_dir / rel
        got = download_file(join(uri, rel), target, verify=False, settings=s)
        if verify and got != meta["sha256"]:
            target.unlink(missing_ok=True)
            raise IntegrityError(
                f"{join(uri, rel)}: sha256 {got} does not match the manifest's "
                f"{meta['sha256']}; refused"
            )
    if verify:
        (local_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest
