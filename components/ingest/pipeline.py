"""`ingest`: input files/URIs → cleaned, filtered, deduplicated train/val parquet + stats.

    from kiln.components.ingest import ingest
    stats = ingest(["web=data/crawl/*.jsonl.zst", "books=s3://corpus/books/"], "data/clean")

Workers (`cfg.workers` processes) read and process one input file each (steps.py); the parent
replays their results in input order — so output and dedup decisions do not depend on
scheduling — and does global exact + near dedup, per-source sampling, the split, and writing.
Output: `train/*.parquet`, `val/*.parquet` ({id, text, source}), `stats.json` (every file found,
read or skipped with a reason; every record counted), `rejects.jsonl` (one line per dropped
record with file, line and reason). Train and val are never empty: fewer than two kept
documents is an error that says why.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from kiln.components.common.config import IngestConfig
from kiln.components.common.parallel import OrderedPool
from kiln.components.common.progress import Progress
from kiln.components.ingest import readers, steps
from kiln.components.ingest.dedup import Deduper
from kiln.components.ingest.events import Dropped, FileResult, FileTask, Kept, Unreadable
from kiln.components.ingest.readers import Skipped
from kiln.components.ingest.stats import Stats
from kiln.components.ingest.writer import SplitWriter, copies


def _validate(cfg: IngestConfig) -> None:
    if cfg.on_bad_utf8 not in {"replace", "skip"}:
        raise ValueError(f"ingest.on_bad_utf8 must be replace or skip, got {cfg.on_bad_utf8!r}")
    if not 0 <= cfg.val_fraction < 1:
        raise ValueError(f"ingest.val_fraction must be in [0, 1), got {cfg.val_fraction}")
    if cfg.workers < 1:
        raise ValueError(f"ingest.workers must be >= 1, got {cfg.workers}")
    if cfg.dedup.bands * cfg.dedup.rows < 1 or cfg.dedup.bands > 255 or cfg.dedup.shingle < 1:
        raise ValueError("ingest.dedup: need 1 <= bands <= 255, rows >= 1, shingle >= 1")
    bad = {k: v for k, v in cfg.source_weights.items() if not isinstance(v, int | float) or v < 0}
    if bad:
        raise ValueError(f"ingest.source_weights: weights must be numbers >= 0, got {bad}")


class Plan(NamedTuple):
    """(source, file) to read, and (source, Skipped) found but not read, in argument order."""

    files: list[tuple[str, str]]
    skipped: list[tuple[str, Skipped]]


def plan(inputs: list[str]) -> Plan:
    """The files of every input argument, in argument then name order, and those skipped;
    each path once."""
    if not inputs:
        raise ValueError("ingest: no --input given")
    files, skipped, seen = [], [], set()
    for arg in inputs:
        source, target = readers.split_source(arg)
        found = readers.scan(target)
        if not found.files:
            why = Counter(s.reason for s in found.skipped)
            seen = (
                f"; found {len(found.skipped)} that cannot be read: "
                + ", ".join(f"{r} ({n})" for r, n in why.most_common())
                if found.skipped
                else ""
            )
            raise ValueError(
                f"ingest: --input {arg} matched no input files{seen} (expected files, directories "
                "or globs of .txt .md .jsonl .json .parquet, optionally .gz/.zst; or s3://, hf://)"
            )
        # A file named by two inputs is read once, under the first (a second read is all dups).
        files += [(source, f) for f in found.files if f not in seen]
        skipped += [(source, s) for s in found.skipped if s.path not in seen]
        seen.update(found.files, (s.path for s in found.skipped))
    return Plan(files, skipped)


def _results(tasks: list[FileTask], cfg: IngestConfig) -> Iterator[FileResult]:
    if cfg.ray_address:
        from kiln.components.ingest.ray_ingest import ray_results

        yield from ray_results(tasks, cfg)
        return
    process = steps.FileSteps(cfg)
    if cfg.workers == 1:
        yield from map(process, tasks)
        return
    with OrderedPool(cfg.workers) as pool:
        yield from pool.map(process, tasks)


def ingest(inputs: list[str], output: str | Path, cfg: IngestConfig | None = None) -> Stats:
    """Read, clean, filter, deduplicate, split and write a dataset; return its Stats.

    Args:
        inputs: files, directories, globs, s3:// prefixes or hf:// datasets; `name=...` names
            the source for `cfg.source_weights`.
        output: directory for train/, val/, stats.json and rejects.jsonl (replaced if present).
        cfg: the `ingest` config section (defaults if None).
    """
    cfg = cfg or IngestConfig()
    _validate(cfg)
    files, skipped = plan(inputs)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    for old in ("train", "val"):
        shutil.rmtree(out / old, ignore_errors=True)
    (out / "stats.json").unlink(missing_ok=True)  # stats.json last: its presence means complete
    stats = Stats(config=dataclasses.asdict(cfg))
    for source, skip in skipped:
        stats.skip_file(skip.path, source, skip.reason)
    splits = SplitWriter(out, cfg.shard_bytes, cfg.val_fraction, cfg.split_seed)
    dedup = Deduper(cfg.dedup)
    progress = Progress("ingest", unit="docs")
    t0 = time.time()
    with (
        tempfile.TemporaryDirectory(dir=out, prefix=".spill-") as tmp,
        open(out / "rejects.jsonl", "w") as rejects,
    ):

        def reject(reason: str, file: str, line: int, detail: str = "") -> None:
            rejects.write(
                json.dumps({"reason": reason, "file": file, "line": line, "detail": detail}) + "\n"
            )

        tasks = [
            FileTask(source, path, str(Path(tmp) / f"{i:08d}.pkl"))
            for i, (source, path) in enumerate(files)
        ]
        for task, result in zip(tasks, _results(tasks, cfg), strict=True):
            before = stats.documents_in
            src = stats.source(task.source, cfg.source_weights.get(task.source, 1.0))
            entry = stats.read_file(task.path, task.source)
            tally = _Tally((src, entry))
            for ev in steps.replay(result.spill):
                stats.documents_in += 1
                tally("in")
                if isinstance(ev, Unreadable):
                    tally("unreadable")
                    stats.bump(stats.unreadable, ev.kind)
                    stats.example(
                        ev.kind, cfg.rejects_examples, file=ev.file, line=ev.line, detail=ev.detail
                    )
                    reject(ev.kind, ev.file, ev.line, ev.detail)
                elif isinstance(ev, Dropped):
                    tally("filtered")
                    stats.bump(stats.filtered, ev.reason)
                    stats.example(
                        ev.reason, cfg.rejects_examples, file=ev.file, line=ev.line, text=ev.head
                    )
                    reject(ev.reason, ev.file, ev.line, ev.doc_id)
                else:
                    _write_doc(ev, cfg, stats, tally, src["weight"], dedup, splits, reject)
            counters = result.counters
            if counters.skipped:
                stats.skip_file(task.path, task.source, counters.skipped)
            elif counters.encoding not in ("", "utf-8"):
                entry["encoding"] = counters.encoding
            for k, v in counters.pii.items():
                stats.bump(stats.pii_redacted, k, v)
            for k, v in counters.repaired().items():
                stats.bump(stats.repaired, k, v)
            stats.bytes_in += counters.bytes_in
            tally("bytes_in", counters.bytes_in)
            progress.update(counters.bytes_in, stats.documents_in - before)
    progress.close()
    stats.splits = splits.close()
    stats.bytes_out = sum(s["bytes"] for s in stats.splits.values())
    stats.seconds = round(time.time() - t0, 3)
    stats.check()
    print(stats.summary())
    _check_splits(stats, cfg, out)
    stats.save(out / "stats.json")
    return stats


class _Tally:
    """Adds to the same counter of several tables at once (a source's and a file's)."""

    def __init__(self, tables: tuple[dict, ...]):
        self.tables = tables

    def __call__(self, key: str, n: int = 1) -> None:
        for table in self.tables:
            table[key] += n


def _check_splits(stats: Stats, cfg: IngestConfig, out: Path) -> None:
    """Refuse a dataset that later stages cannot use: no documents, or an empty split."""
    empty = [name for name, s in stats.splits.items() if not s["docs"]]
    if stats.kept and (cfg.val_fraction == 0 or not empty):
        return
    need = "at least 1" if cfg.val_fraction == 0 else "at least 2 (one for train, one for val)"
    raise ValueError(
        f"ingest: {stats.kept} document(s) kept of {stats.documents_in:,} read "
        f"({sum(stats.filtered.values()):,} filtered, "
        f"{stats.duplicates_exact + stats.duplicates_near:,} duplicates, "
        f"{sum(stats.unreadable.values()):,} unreadable; "
        f"{sum(stats.skipped_files.values()):,} files skipped); ingest.val_fraction="
        f"{cfg.val_fraction} needs {need}. Add input documents, or see {out / 'rejects.jsonl'} "
        "and the summary above for why documents were dropped"
    )


def _write_doc(
    doc: Kept,
    cfg: IngestConfig,
    stats: Stats,
    tally: _Tally,
    weight: float,
    dedup: Deduper,
    splits: SplitWriter,
    reject,
) -> None:
    dup = dedup.check(doc.exact_key, doc.signature, doc.band_keys or [])
    if dup:
        tally("duplicates")
        if dup == "exact":
            stats.duplicates_exact += 1
        else:
            stats.duplicates_near += 1
        stats.example(
            f"duplicate_{dup}",
            cfg.rejects_examples,
            file=doc.file,
            line=doc.line,
            text=doc.text[:200],
        )
        reject(f"duplicate_{dup}", doc.file, doc.line, doc.doc_id)
        return
    n = copies(doc.doc_id, weight)
    if n == 0:
        tally("filtered")
        stats.bump(stats.filtered, "downsampled")
        reject("downsampled", doc.file, doc.line, doc.doc_id)
        return
    stats.kept += 1
    tally("kept")
    splits.add(doc.doc_id, doc.text, doc.source, n)
    tally("out", n)
    stats.documents_out += n
