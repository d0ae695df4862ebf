"""What a published model came from: code version, data digests, checkpoints, loss curve.

Everything here reads local files only (no S3, no MLflow), so it is cheap to test:

    lineage_tags(report, tokens_dir="data/tokens")   # dataset/tokenizer/val-set digests, code
    checkpoints_index("runs/r1")                     # step_N dirs with per-file sha256
    plot_loss_curve("runs/r1/train_log.jsonl", "loss_curve.png")
"""

from __future__ import annotations

import json
import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from kiln.components.common.storage import sha256_file
from kiln.components.pretrain import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[2]


def git_sha() -> str:
    """The commit this code runs from: $KILN_GIT_SHA (set in images), else `git rev-parse`
    in the source tree (suffixed `-dirty` when it has uncommitted changes), else ''."""
    if os.environ.get("KILN_GIT_SHA"):
        return os.environ["KILN_GIT_SHA"]
    if not (REPO / ".git").exists():
        return ""
    try:
        run = {"cwd": REPO, "capture_output": True, "text": True, "timeout": 10}
        sha = subprocess.run(["git", "rev-parse", "HEAD"], check=True, **run).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], **run).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.SubprocessError):
        return ""


def code_version() -> str:
    """`kiln <version>+<git sha>` (or just the version when no git information is available)."""
    try:
        version = metadata.version("kiln")
    except metadata.PackageNotFoundError:
        version = "unknown"
    sha = git_sha()
    if not sha:
        return f"kiln {version}"
    return f"kiln {version}+{sha[:12]}{'-dirty' if sha.endswith('-dirty') else ''}"


def lineage_tags(report: dict[str, Any], tokens_dir: str | Path | None = None) -> dict[str, str]:
    """Lineage of an evaluated model: digests from the tokens manifest (when `tokens_dir` is
    given, else the ones the eval report recorded), the val-set digest, and the code version;
    for a fine-tuned model also its base (URI, registered name and version, MLflow run) and the
    conversations' digest."""
    dataset, tokenizer = report.get("dataset_digest", ""), report.get("tokenizer_sha256", "")
    sft = report.get("kind") == "sft"  # its report carries the conversations' digests
    if tokens_dir and not sft:
        from kiln.components.tokenization.manifest import read_manifest

        manifest = read_manifest(tokens_dir)
        dataset = manifest.dataset_digest or dataset
        tok_file = Path(tokens_dir) / "tokenizer.json"
        tokenizer = manifest.tokenizer_sha256 or (
            sha256_file(tok_file) if tok_file.exists() else ""
        )
    tags = {
        "dataset_digest": dataset,
        "tokenizer_digest": tokenizer,
        "val_set_digest": report.get("val_set_digest", ""),
        "code_version": code_version(),
        "git_sha": git_sha(),
    }
    if sft:  # a fine-tuned model names what it was fine-tuned from
        base = report.get("base_registered") or {}
        tags.update(
            kind="sft",
            base_model_uri=report.get("base_model", ""),
            base_model_name=base.get("name", ""),
            base_model_version=base.get("version", ""),
            base_model_run_id=base.get("run_id", ""),
            base_model_source=base.get("source", ""),
            conversations_digest=dataset,
        )
    return tags


def checkpoints_index(train_dir: str | Path | None) -> list[dict[str, Any]]:
    """The committed `step_N` checkpoints of a training run, oldest first, with per-file sha256.

    Looks in `train_dir/checkpoints` (where `kiln train` and the Ray launcher put them), else in
    `train_dir` itself. Returns [] without a train_dir.
    """
    if not train_dir:
        return []
    root = Path(train_dir)
    found = ckpt.list_checkpoints(root / "checkpoints") or ckpt.list_checkpoints(root)
    index = []
    for directory in found:
        state_file = directory / ckpt.STATE
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        files = {
            p.relative_to(directory).as_posix(): {
                "sha256": sha256_file(p),
                "size": p.stat().st_size,
            }
            for p in sorted(directory.rglob("*"))
            if p.is_file()
        }
        index.append(
            {
                "name": directory.name,
                "step": int(directory.name.removeprefix("step_")),
                "tokens_seen": state.get("tokens_seen"),
                "files": files,
            }
        )
    return index


def plot_loss_curve(train_log: str | Path, out_png: str | Path) -> Path | None:
    """The training curve of `train_log.jsonl` (loss, validation points, learning rate) as a PNG;
    None when there is no log (see `pretrain.train_log.plot_curve`)."""
    from kiln.components.pretrain.train_log import plot_curve

    return plot_curve(train_log, out_png)
