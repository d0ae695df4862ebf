"""`ingest`: input files/URIs → cleaned, filtered, deduplicated train/val parquet + stats.

    from kiln.components.ingest import ingest
    stats = ingest(["web=data/crawl/*.jsonl.zst", "books=s3://corpus/books/"], "data/clean")

Workers (`cfg.workers` processes) read and process one input file each (steps.py); the parent
replays their results in input order — so output and dedup decisions do not depend on
scheduling — and does global exact + near dedup, per-source sampling, the split, and writing.
Output: `train/*.parquet`, `val/*.parquet` ({id, text, source}), `stats.json`, `rejects.jsonl`
(one line per dropped record with file, line and reason).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from kiln.components.common.config import IngestConfig
from kiln.components.common.parallel import OrderedPool
from kiln.components.common.progress import Progress
from kiln.components.ingest import readers, steps
from kiln.components.ingest.dedup import Deduper
from kiln.components.ingest.events import Dropped, FileResult, FileTask, Kept, Unreadable
from kiln.components.ingest.stats import Stats
from kiln.components.ingest.writer import ShardWriter, copies, split_of


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


def plan(inputs: list[str]) -> list[tuple[str, str]]:
    """(source, file) for every input argument, in argument then name order."""
    if not inputs:
        raise ValueError("ingest: no --input given")
    tasks = []
    for arg in inputs:
        source, target = readers.split_source(arg)
        files = readers.expand(target)
        if not files:
            raise ValueError(
                f"ingest: --input {arg} matched no input files (expected files, directories or globs "
                "of .txt .md .jsonl .json .parquet, optionally .gz/.zst; or s3://, hf://)"
            )
        tasks += [(source, f) for f in files]
    return tasks


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
    files = plan(inputs)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    for old in ("train", "val"):
        shutil.rmtree(out / old, ignore_errors=True)
    (out / "stats.json").unlink(missing_ok=True)  # stats.json last: its presence means complete
    stats = Stats(files=len(files), config=dataclasses.asdict(cfg))
    writers = {s: ShardWriter(out / s, cfg.shard_bytes) for s in ("train", "val")}
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
            for ev in steps.replay(result.spill):
                stats.documents_in += 1
                src["in"] += 1
                if isinstance(ev, Unreadable):
                    src["unreadable"] += 1
                    stats.bump(stats.unreadable, ev.kind)
                    stats.example(
                        ev.kind, cfg.rejects_examples, file=ev.file, line=ev.line, detail=ev.detail
                    )
                    reject(ev.kind, ev.file, ev.line, ev.detail)
                elif isinstance(ev, Dropped):
                    src["filtered"] += 1
                    stats.bump(stats.filtered, ev.reason)
                    stats.example(
                        ev.reason, cfg.rejects_examples, file=ev.file, line=ev.line, text=ev.head
                    )
                    reject(ev.reason, ev.file, ev.line, ev.doc_id)
                else:
                    _write_doc(ev, cfg, stats, src, dedup, writers, reject)
            counters = result.counters
            for k, v in counters.pii.items():
                stats.bump(stats.pii_redacted, k, v)
            for k, v in counters.repaired().items():
                stats.bump(stats.repaired, k, v)
            stats.bytes_in += counters.bytes_in
            src["bytes_in"] += counters.bytes_in
            progress.update(counters.bytes_in, stats.documents_in - before)
    progress.close()
    for name, w in writers.items():
        w.close()
        stats.splits[name] = {"docs": w.docs, "bytes": w.bytes, "shards": len(w.files)}
        stats.bytes_out += w.bytes
    stats.seconds = round(time.time() - t0, 3)
    stats.check()
    stats.save(out / "stats.json")
    print(stats.summary())
    return stats


def _write_doc(
    doc: Kept, cfg: IngestConfig, stats: Stats, src: dict, dedup: Deduper, writers, reject
) -> None:
    dup = dedup.check(doc.exact_key, doc.signature, doc.band_keys or [])
    if dup:
        src["duplicates"] += 1
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
    n = copies(doc.doc_id, src["weight"])
    if n == 0:
        src["filtered"] += 1
        stats.bump(stats.filtered, "downsampled")
        reject("downsampled", doc.file, doc.line, doc.doc_id)
        return
    stats.kept += 1
    src["kept"] += 1
    split = split_of(doc.doc_id, cfg.val_fraction, cfg.split_seed)
    for i in range(n):
        writers[split].add(doc.doc_id if i == 0 else f"{doc.doc_id}#{i}", doc.text, doc.source)
    src["out"] += n
    stats.documents_out += n
