"""`kiln artifacts`: list and fetch stored artifacts (local, s3:// or a registered model
version's files via models:/NAME@ALIAS), verified against the sha256 recorded at upload."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kiln.components.common import storage
from kiln.components.common.storage import IntegrityError, StorageError
from kiln.pipelines.commands.models import add_tracking_args, registry_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "artifacts",
        help="list or fetch artifacts (s3://, local, or models:/NAME@ALIAS), sha256-verified",
        description="S3 settings come from AWS_S3_ENDPOINT, AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION (OpenShift AI data-connection names).",
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


def run_list(args: argparse.Namespace) -> int:
    uri = _resolve(args.uri, args)
    files = storage.list_files(uri)
    if not files:
        raise FileNotFoundError(f"{uri}: no files there")
    manifest = storage.read_manifest(uri) or {"files": {}}
    base = uri.rstrip("/") + "/"
    for f in files:
        meta = manifest["files"].get(f[len(base) :], {})
        size = meta.get("size", "")
        print(f"{meta.get('sha256', '-')[:16]:16} {size:>12} {f}")
    state = "committed" if manifest["files"] else "not committed (no manifest)"
    print(f"{len(files)} files; {state}", file=sys.stderr)
    return 0


def run_get(args: argparse.Namespace) -> int:
    verify = not args.no_verify
    try:
        uri = _resolve(args.uri, args)
        if args.uri.startswith("models:/"):
            verify = True  # a registered version is only ever fetched verified
        dest = Path(args.dest)
        files = storage.list_files(uri)
        if not files:
            raise FileNotFoundError(f"{uri}: no files there")
        if files == [uri]:  # a single file
            target = dest / Path(uri).name if dest.is_dir() or args.dest.endswith("/") else dest
            sha = storage.download_file(uri, target, verify=verify)
            print(f"{target}  sha256 {sha}{' (verified)' if verify else ''}")
            return 0
        manifest = storage.download_dir(uri, dest, verify=verify)
        n, size = len(manifest["files"]), manifest.get("total_bytes", 0)
        print(f"{n} files ({size} bytes) → {dest}{'  all sha256 verified' if verify else ''}")
        return 0
    except (IntegrityError, StorageError) as e:
        print(f"kiln artifacts get: refused: {e}", file=sys.stderr)
        return 1
