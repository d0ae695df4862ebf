"""The SFT "conversations" stage: chat records → deduplicated train/val JSONL with exact stats.

    from kiln.components.sft.conversations import conversations, load_conversations
    stats = conversations(["chats/*.jsonl.gz", "s3://bucket/chats/"], "out/sft", cfg.sft)
    train = load_conversations("out/sft", "train")   # [[{"role", "content"}, ...], ...]

From the command line: `kiln sft-data --input chats/ --output out/sft`. Reading and validating
records is `conversation_records.py`. Each record is kept, a duplicate (the same normalized
messages as an earlier record), or rejected with a code from `REASONS`, so
`records_in == kept + duplicates + sum(rejected)`, checked before anything is written.

Split: a kept conversation goes to val when the first 4 bytes of its sha256, as a fraction of
2**32, are below `sft.val_fraction`, so adding data never moves the others. When that leaves
fewer than `sft.min_val` in val and at least 2 * min_val were kept, the train conversations
with the smallest hashes move to val until it has min_val.

Output, replaced as a whole (staged in a sibling directory and renamed; for s3://, uploaded
from a temporary directory and committed with a manifest): `train.jsonl` and `val.jsonl` (one
`{"messages": [{"role", "content"}, ...]}` per line, in input order), `rejects.jsonl` (one
`{"file", "line", "reason", "detail", "excerpt"}` per rejected record) and `stats.json`.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.components.common import storage
from kiln.components.common.config import SFTConfig
from kiln.components.common.errors import UserError
from kiln.components.sft.conversation_records import (
    REASONS,
    ROLES,
    Message,
    Plan,
    Record,
    Reject,
    conversation_hash,
    plan,
    read_records,
    to_messages,
)

__all__ = ["REASONS", "ConversationStats", "conversations", "load_conversations"]

log = logging.getLogger("kiln.sft")

SPLITS = ("train", "val")
OUTPUT_FILES = ("train.jsonl", "val.jsonl", "rejects.jsonl", "stats.json")
PROGRESS_EVERY = 10_000
EXCERPT_CHARS = 200


@dataclass
class ConversationStats:
    """Exact accounting of one run; `to_dict` is stats.json."""

    records_in: int = 0
    kept: int = 0
    train: int = 0
    val: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    sources: dict[str, int] = field(default_factory=dict)  # file → records read from it
    messages: Counter[str] = field(default_factory=lambda: Counter(dict.fromkeys(ROLES, 0)))
    chars: Counter[str] = field(default_factory=lambda: Counter(dict.fromkeys(ROLES, 0)))
    digest: str = ""  # sha256 of train.jsonl then val.jsonl bytes
    skipped_files: dict[str, str] = field(default_factory=dict)  # not read, and why

    def add(self, messages: list[Message]) -> None:
        """Count a kept conversation's messages and characters per role."""
        self.kept += 1
        for m in messages:
            self.messages[m["role"]] += 1
            self.chars[m["role"]] += len(m["content"])

    def check(self) -> None:
        """Raise unless every record is accounted for exactly once."""
        accounted = self.kept + self.duplicates + sum(self.rejected.values())
        if self.records_in != accounted or self.train + self.val != self.kept:
            raise RuntimeError(f"sft accounting does not add up (a bug): {self.to_dict()}")

    def to_dict(self) -> dict[str, Any]:
        """stats.json: the counts, rejects by reason, records per file, messages and characters
        per role, the output digest and the files skipped (not .jsonl/.json) with why."""
        return {
            "records_in": self.records_in,
            "kept": self.kept,
            "train": self.train,
            "val": self.val,
            "duplicates": self.duplicates,
            "rejected": dict(sorted((k, v) for k, v in self.rejected.items() if v)),
            "sources": self.sources,
            "messages": dict(self.messages),
            "chars": dict(self.chars),
            "digest": self.digest,
            "skipped_files": self.skipped_files,
        }

    def summary(self) -> str:
        """One line: kept, train, val, duplicates, rejected by reason."""
        why = ", ".join(f"{r} {n:,}" for r, n in sorted(self.rejected.items()) if n)
        return (
            f"{self.records_in:,} records → {self.kept:,} kept ({self.train:,} train, "
            f"{self.val:,} val), {self.duplicates:,} duplicates, "
            f"{sum(self.rejected.values()):,} rejected" + (f" ({why})" if why else "")
        )


def conversations(
    inputs: list[str] | str, output_dir: str | Path, cfg: SFTConfig | None = None
) -> ConversationStats:
    """Read, validate, deduplicate and split conversations; write them with their stats.

    Args:
        inputs: files, directories, globs or s3:// prefixes of .jsonl/.json (.gz/.zst).
        output_dir: local directory or s3:// prefix; replaced as a whole.
        cfg: the `sft` config section (val_fraction, min_val, max_message_chars,
            system_prompt); defaults if None.

    Returns:
        The accounting written to stats.json.

    Raises:
        UserError: an input names no .jsonl/.json file, there are no records at all (nothing
            is written), or no conversation was kept (written, to show rejects.jsonl).
    """
    cfg = cfg or SFTConfig()
    found = plan([inputs] if isinstance(inputs, str) else list(inputs))
    stats = ConversationStats(skipped_files=found.skipped)
    with _staged(str(output_dir)) as tmp:
        _build(found, tmp, cfg, stats)
    log.info("sft-data: %s", stats.summary())
    if not stats.kept:
        rejects = storage.join(str(output_dir), "rejects.jsonl")
        raise UserError(f"no conversation kept ({stats.summary()}); see {rejects} for why")
    return stats


def _build(found: Plan, tmp: Path, cfg: SFTConfig, stats: ConversationStats) -> None:
    """Stream every record into tmp/{train,val,rejects}.jsonl, then top up val and write stats."""
    seen: set[bytes] = set()
    train_hashes: list[bytes] = []  # in train.jsonl order, for the min_val top-up
    with contextlib.ExitStack() as stack:
        out = {
            name: stack.enter_context(open(tmp / f"{name}.jsonl", "w", encoding="utf-8"))
            for name in (*SPLITS, "rejects")
        }
        for file in found.files:
            for record in read_records(file):
                stats.records_in += 1
                stats.sources[record.file] = stats.sources.get(record.file, 0) + 1
                if stats.records_in % PROGRESS_EVERY == 0:
                    log.info("sft: %d records read, %d kept", stats.records_in, stats.kept)
                value = record.value
                messages = value if isinstance(value, Reject) else to_messages(value, cfg)
                if isinstance(messages, Reject):
                    stats.rejected[messages.reason] += 1
                    out["rejects"].write(_reject_line(record, messages))
                    continue
                digest = conversation_hash(messages)
                if digest in seen:
                    stats.duplicates += 1
                    continue
                seen.add(digest)
                stats.add(messages)
                split = "val" if _unit(digest) < cfg.val_fraction else "train"
                out[split].write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
                if split == "val":
                    stats.val += 1
                else:
                    train_hashes.append(digest)
    if not stats.records_in:
        raise UserError(f"no records in {len(found.files)} input file(s)")
    stats.val += _top_up_val(tmp, train_hashes, stats.val, cfg.min_val)
    stats.train = stats.kept - stats.val
    if stats.val < cfg.min_val:
        log.warning("sft: val has %d < sft.min_val=%d conversations", stats.val, cfg.min_val)
    digest = hashlib.sha256()
    for split in SPLITS:
        with open(tmp / f"{split}.jsonl", "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    stats.digest = digest.hexdigest()
    stats.check()
    text = json.dumps(stats.to_dict(), indent=2, ensure_ascii=False)
    (tmp / "stats.json").write_text(text + "\n", encoding="utf-8")


def _unit(digest: bytes) -> float:
    """The hash as a fraction in [0, 1): int(sha256_hex[:8], 16) / 2**32."""
    return int.from_bytes(digest[:4], "big") / 2**32


def _reject_line(record: Record, why: Reject) -> str:
    text = record.text
    if text is None:  # an item of a .json list: show it re-encoded
        try:
            text = json.dumps(record.value, ensure_ascii=False)
        except (ValueError, RecursionError):
            text = "<unprintable>"
    # A lone surrogate in the excerpt could not be written as UTF-8.
    excerpt = text[:EXCERPT_CHARS].encode("utf-8", "replace").decode("utf-8")
    row = {"file": record.file, "line": record.line, "reason": why.reason}
    return json.dumps({**row, "detail": why.detail, "excerpt": excerpt}, ensure_ascii=False) + "\n"


def _top_up_val(tmp: Path, train_hashes: list[bytes], val: int, min_val: int) -> int:
    """Move the smallest-hash train conversations to val until it has `min_val`, when at least
    2 * min_val were kept; returns how many moved."""
    need = min_val - val
    if need <= 0 or len(train_hashes) + val < 2 * min_val:
        return 0
    order = range(len(train_hashes))
    moved = set(heapq.nsmallest(need, order, key=lambda i: (train_hashes[i], i)))
    train, rest = tmp / "train.jsonl", tmp / "train.rest"
    with (
        open(train, encoding="utf-8", newline="") as src,
        open(rest, "w", encoding="utf-8", newline="") as keep,
        open(tmp / "val.jsonl", "a", encoding="utf-8", newline="") as to_val,
    ):
        for i, line in enumerate(src):
            (to_val if i in moved else keep).write(line)
    os.replace(rest, train)
    return len(moved)


@contextlib.contextmanager
def _staged(output_dir: str) -> Iterator[Path]:
    """A fresh directory to write into that becomes `output_dir` as a whole on success."""
    if storage.is_s3(output_dir):
        with tempfile.TemporaryDirectory(prefix="kiln-sft-") as tmp:
            yield Path(tmp)
            storage.upload_dir(tmp, output_dir)
        return
    out = Path(output_dir)
    if out.exists():
        if not out.is_dir():
            raise UserError(f"--output {out} is a file; give a directory")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OUTPUT_FILES)
        if foreign:  # replacing it would delete what this stage never wrote
            raise UserError(
                f"--output {out} holds {', '.join(foreign[:3])}, which sft-data does "
                "not write; give a new or empty directory, or a previous sft-data output"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.chmod(0o755)  # mkdtemp makes it private; the output should read like any directory
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def load_conversations(path_or_dir: str | Path, split: str = "train") -> list[list[Message]]:
    """The conversations of one split of a `conversations` output, as messages lists.

    Args:
        path_or_dir: the output directory or s3:// prefix, or one .jsonl file of it.
        split: "train" or "val" (ignored when `path_or_dir` is a .jsonl file).

    Raises:
        UserError: the file does not exist.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be train or val, got {split!r}")
    uri = str(path_or_dir)
    if not uri.endswith(".jsonl"):
        uri = storage.join(uri, f"{split}.jsonl")
    if not storage.exists(uri):
        raise UserError(f"{uri}: no such file; write it with `kiln sft-data --output ...`")
    if not storage.is_s3(uri):
        return _read_split(Path(uri))
    with tempfile.TemporaryDirectory(prefix="kiln-sft-") as tmp:
        local = Path(tmp) / f"{split}.jsonl"
        storage.download_file(uri, local, verify=True)  # checked against its recorded sha256
        return _read_split(local)


def _read_split(path: Path) -> list[list[Message]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["messages"] for line in f if line.strip()]
