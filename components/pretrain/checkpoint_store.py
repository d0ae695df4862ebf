"""Where a run's `step_N/` checkpoints live, so every launcher resumes what any other one wrote.

One format (checkpoint.py), three writers, one lookup:

    plain process  OUTPUT/checkpoints/step_N
    TrainJob       OUTPUT/checkpoints/step_N, or {dist.storage_path}/checkpoints/step_N when set
    Ray Train      {dist.storage_path or OUTPUT/ray}/train/step_N (its run directory), and the
                   pipeline step copies the final one to OUTPUT/checkpoints/step_N

A TrainJob node resumes from the newest complete `step_N` of all of these (`resume_roots`); a
Ray worker from Ray's own checkpoint, unless another launcher's is newer. A root is
a local directory (a shared volume on a cluster) or `s3://` through the storage layer; a
checkpoint counts once all its required files are there (S3 objects land whole), whoever wrote it.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from kiln.components.pretrain import checkpoint as ckpt

RAY_RUN_NAME = "train"  # Ray Train's run directory under its storage path (ray_launch.RUN_NAME)
REQUIRED = (ckpt.MODEL, ckpt.OPTIM, ckpt.STATE, ckpt.CONFIG)
_STEP = re.compile(r"^step_(\d+)$")


class Found(NamedTuple):
    """A complete checkpoint: its step and where it is (a local path or an s3:// URI)."""

    step: int
    uri: str


def own_root(storage_path: str, output_dir: str | Path) -> str:
    """Where a TrainJob writes its checkpoints: beside Ray's run in `storage_path`, else the
    plain runner's OUTPUT/checkpoints."""
    from kiln.components.common import storage

    if storage_path:
        return storage.join(storage_path, "checkpoints")
    return str(Path(output_dir) / "checkpoints")


def resume_roots(storage_path: str, output_dir: str | Path, ray: bool = True) -> list[str]:
    """Every place a launcher may have left checkpoints of this run (see the module docstring);
    with `ray=False` not Ray's run directory, whose checkpoints Ray itself restores."""
    from kiln.components.common import storage

    # With a storage path, OUTPUT is scratch (a Ray job's, say): a stale checkpoint left there
    # by an earlier job must never win over this run's own.
    roots = [own_root(storage_path, output_dir)]
    if ray:
        roots.append(storage.join(storage_path or str(Path(output_dir) / "ray"), RAY_RUN_NAME))
    return list(dict.fromkeys(roots))


def _complete_steps(root: str) -> list[Found]:
    if not root.startswith("s3://"):
        return [
            Found(int(p.name[5:]), str(p))
            for p in ckpt.list_checkpoints(root)
            if all((p / name).is_file() for name in REQUIRED)
        ]
    from kiln.components.common import storage

    prefix = root.rstrip("/") + "/"
    files: dict[str, set[str]] = {}
    for uri in storage.list_files(root):
        step_dir, _, name = uri[len(prefix) :].partition("/")
        files.setdefault(step_dir, set()).add(name)
    return [
        Found(int(m.group(1)), storage.join(root, d))
        for d, names in files.items()
        if (m := _STEP.match(d)) and set(REQUIRED) <= names
    ]


def newest(roots: list[str]) -> Found | None:
    """The complete checkpoint with the highest step under any of `roots`, else None."""
    found = [f for root in roots for f in _complete_steps(root)]
    return max(found, default=None)


@contextlib.contextmanager
def opened(found: Found) -> Iterator[Path]:
    """`found` as a local directory: as it is, or downloaded from S3 (checked against its
    manifest when the writer committed one) into a temporary directory."""
    if not found.uri.startswith("s3://"):
        yield Path(found.uri)
        return
    from kiln.components.common import storage

    with tempfile.TemporaryDirectory(prefix="kiln-resume-") as tmp:
        local = Path(tmp) / f"step_{found.step}"
        storage.download_dir(found.uri, local, verify=storage.is_committed(found.uri))
        yield local


def save(root: str, step: int, writer, keep: int) -> str:
    """Write checkpoint `step` under `root` (atomically when local, committed last on S3) and
    keep only the newest `keep`; returns where it is."""
    if not root.startswith("s3://"):
        return str(ckpt.save_atomic(root, step, writer, keep))
    from kiln.components.common import storage

    target = storage.join(root, f"step_{step}")
    with tempfile.TemporaryDirectory(prefix="kiln-ckpt-") as tmp:
        writer(Path(tmp) / f"step_{step}")
        storage.upload_dir(Path(tmp) / f"step_{step}", target)
    for old in sorted(_complete_steps(root))[:-keep] if keep > 0 else []:
        # The required files first: a half-deleted checkpoint no longer counts as complete.
        files = storage.list_files(old.uri)
        for uri in sorted(files, key=lambda u: u.rsplit("/", 1)[-1] not in REQUIRED):
            storage.delete(uri)
    return target


def copy_into(found: Found, root: str | Path) -> Path:
    """Copy `found` to the local `root/step_N` (atomically), unless it is there; returns it."""
    target = Path(root) / f"step_{found.step}"
    if Path(found.uri).resolve() == target.resolve():
        return target

    def writer(tmp: Path) -> None:
        with opened(found) as directory:
            shutil.copytree(directory, tmp)

    return ckpt.save_atomic(root, found.step, writer)
