"""`kiln artifacts`: list and fetch stored artifacts (local, s3:// or a registered model
version's files via models:/NAME@ALIAS), verified against the sha256 recorded at upload."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kiln.components.common import storage
from kiln.components.common.storage import IntegrityError
from kiln.pipelines.commands.models import add_tracking_args, registry_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "artifacts",
        help="list or fetch artifacts (s3://, local, or models:/NAME@ALIAS), sha256-verified",
        description="S3 settings come from AWS_S3_ENDPOINT, AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION (OpenShift AI data-connection names); "
        "without an endpoint, s3:// URIs are read from KILN_S3_LOCAL_ROOT, else from the local "
        "stand-in WORKDIR/s3 that `kiln run` writes.",
    )
    asub = p.add_subparsers(dest="artifacts_command", metavar="ACTION", required=True)

    ls = asub.add_parser("list", help="every file under a URI, with sha256 when committed")
    ls.add_argument("uri", metavar="URI", help="s3://bucket/prefix, a local dir, or models:/…")
    add_tracking_args(ls)
    ls.set_defaults(func=run_list)

    get = asub.add_parser("get", help="download a file or a committed directory, verified")
    get.add_argument(
        "uri",
        metavar="URI",
        help="s3://bucket/key, a local path, models:/NAME@ALIAS or models:/NAME/VERSION",
    )
    get.add_argument("dest", metavar="DEST", help="local directory (or file name for one file)")
    get.add_argument(
        "--no-verify",
        action="store_true",
        help="skip sha256 verification (for objects Kiln did not upload); never for models",
    )
    add_tracking_args(get)
    get.set_defaults(func=run_get)


def _resolve(uri: str, args: argparse.Namespace) -> str:
    if not uri.startswith("models:/"):
        return uri
    source = registry_from_args(args).resolve(uri)
    print(f"{uri} → {source}", file=sys.stderr)
    if not (storage.is_s3(source) or source.startswith(("/", "file://"))):
        raise ValueError(f"{uri}: source {source!r} is not an s3:// URI or a local path")
    return source


def _files(uri: str, s: storage.S3Settings) -> list[str]:
    """Every file under `uri`; a FileNotFoundError saying where it looked when there is none."""
    files = storage.list_files(uri, s)
    if files:
        return files
    where = ""
    if storage.is_s3(uri):
        local = storage.local_path(uri, s)
        where = f" (S3 at {s.endpoint})" if s.endpoint else f" (looked in {local})" if local else ""
    raise FileNotFoundError(f"{uri}: no files there{where}")


def run_list(args: argparse.Namespace) -> int:
    uri = _resolve(args.uri, args)
    s = storage.settings_for_workdir(args.workdir)
    files = _files(uri, s)
    manifest = storage.read_manifest(uri, s) or {"files": {}}
    base = uri.rstrip("/") + "/"
    for f in files:
        meta = manifest["files"].get(f[len(base) :], {})
        size = meta.get("size", "")
        print(f"{meta.get('sha256', '-')[:16]:16} {size:>12} {f}")
    state = "committed" if manifest["files"] else "not committed (no manifest)"
    print(f"{len(files)} files; {state}", file=sys.stderr)
    return 0


def run_get(args: argparse.Namespace) -> int:
    uri = _resolve(args.uri, args)
    # a registered version is only ever fetched verified
    verify = args.uri.startswith("models:/") or not args.no_verify
    s = storage.settings_for_workdir(args.workdir)
    dest = Path(args.dest)
    files = _files(uri, s)
    single = files == [uri]
    if single and (dest.is_dir() or args.dest.endswith("/")):
        dest = dest / Path(uri).name
    elif not single and dest.is_file():
        raise ValueError(f"{dest} is a file; DEST for the directory {uri} must be a directory")
    try:
        with _staged(dest) as staging:
            if single:
                sha = storage.download_file(uri, staging, verify=verify, settings=s)
            else:
                manifest = storage.download_dir(uri, staging, verify=verify, settings=s)
    except IntegrityError as e:
        raise IntegrityError(f"{e} (nothing was written to {dest})") from e
    checked = " (verified)" if verify else ""
    if single:
        print(f"{dest}  sha256 {sha}{checked}")
    else:
        n, size = len(manifest["files"]), manifest.get("total_bytes", 0)
        print(f"{n} files ({size} bytes) → {dest}{'  all sha256 verified' if verify else ''}")
    return 0


@contextlib.contextmanager
def _staged(dest: Path) -> Iterator[Path]:
    """A path to download to, in a temporary directory beside `dest` (same filesystem); what
    lands there is moved into `dest` only when the block succeeds. On failure nothing is left:
    not the partial download, nor the parent directories created for it."""
    parent = dest.absolute().parent
    created = [d for d in (parent, *parent.parents) if not d.exists()]  # deepest first
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.kiln-get-", dir=parent))
    done = False
    try:
        yield tmp / dest.name
        _install(tmp / dest.name, dest)
        done = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in created if not done else ():
            with contextlib.suppress(OSError):
                d.rmdir()


def _install(staged: Path, dest: Path) -> None:
    """Move a downloaded file or tree into place (merging into an existing directory)."""
    if not (staged.is_dir() and dest.is_dir()):
        os.replace(staged, dest)
        return
    for f in sorted(p for p in staged.rglob("*") if p.is_file()):
        target = dest / f.relative_to(staged)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, target)
