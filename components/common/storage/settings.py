"""Storage settings, errors and URI helpers (no boto3 here; see `s3.py`).

Settings come from the environment under the OpenShift AI data-connection names
(`AWS_S3_ENDPOINT`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`,
`AWS_S3_BUCKET`), tuned by `KILN_S3_*` variables, overridden by a `StorageConfig` or per call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_NAME = "_KILN_MANIFEST.json"
SIDECAR_SUFFIX = ".kiln-meta.json"
_CHUNK = 8 << 20


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
    file_concurrency: int = 4
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


def stand_in_root(workdir: str | Path) -> Path:
    """Where `kiln run` keeps the local S3 stand-in of a workdir (its KILN_S3_LOCAL_ROOT)."""
    return Path(workdir) / "s3"


def settings_for_workdir(workdir: str | Path, **overrides: Any) -> S3Settings:
    """S3Settings from the env; with neither AWS_S3_ENDPOINT nor KILN_S3_LOCAL_ROOT set, the
    local stand-in that `kiln run` left in WORKDIR/s3, when there is one, so readers find the
    s3:// URIs it printed without any setup."""
    s = S3Settings.from_env(**overrides)
    root = stand_in_root(workdir)
    if not s.endpoint and not s.local_root and root.is_dir():
        return dataclasses.replace(s, local_root=str(root.resolve()))
    return s


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


def local_path(uri: str, s: S3Settings) -> Path | None:
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
