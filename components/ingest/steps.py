"""The per-document work done in worker processes: normalize, language, filters, PII, features.

`FileSteps(cfg)` is called once per input file (`FileTask`): it streams the file through the
steps and spills every outcome — an `Unreadable`, `Dropped` or `Kept` event (events.py), in input
order — to a pickle stream on disk (bounded memory on both sides); the parent replays it to count,
dedup and write. The object travels to worker processes and Ray tasks as its config alone and
rebuilds its filters there, so no process-wide state is needed.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

from kiln.components.common.config import IngestConfig
from kiln.components.ingest import filters as filters_mod
from kiln.components.ingest.dedup import MinHasher, exact_key
from kiln.components.ingest.document import Document, Problem
from kiln.components.ingest.events import (
    Dropped,
    Event,
    FileCounters,
    FileResult,
    FileTask,
    Kept,
    Unreadable,
)
from kiln.components.ingest.language import detect
from kiln.components.ingest.normalize import normalize, redact_pii
from kiln.components.ingest.readers import Reader

BATCH = 256


class FileSteps:
    """The per-document steps of one ingest config; call it with a `FileTask`."""

    def __init__(self, cfg: IngestConfig):
        self.cfg = cfg
        self.filters = filters_mod.build(cfg.filters)
        self.minhash = MinHasher(cfg.dedup) if cfg.dedup.near else None
        self.langs = set(cfg.languages)

    def __reduce__(self):
        # The filters are closures (not picklable) and cheap to build: ship the config only.
        return (FileSteps, (self.cfg,))

    def document(self, doc: Document, counters: FileCounters) -> Dropped | Kept:
        """Normalize one document and run the language check, filters, PII and dedup keys."""
        cfg = self.cfg
        text, removed = normalize(doc.text)
        counters.control_chars_removed += removed
        if not text.strip():
            return Dropped("empty", doc.file, doc.line, doc.id, "")
        if self.langs:
            lang, score = detect(text)
            if lang not in self.langs or score < cfg.min_lang_score:
                head = f"[{lang} {score:.2f}] {text[:160]}"
                return Dropped("language", doc.file, doc.line, doc.id, head)
        reason = filters_mod.apply(self.filters, text)
        if reason:
            return Dropped(reason, doc.file, doc.line, doc.id, text[:200])
        if cfg.redact_pii:
            text = redact_pii(text, counters.pii)
        sig = bands = None
        if self.minhash is not None:
            sig = self.minhash.signature(text)
            bands = self.minhash.band_keys(sig)
        return Kept(doc.id, text, doc.source, doc.file, doc.line, exact_key(text), sig, bands)

    def __call__(self, task: FileTask) -> FileResult:
        """Run the steps over one input file; its events go to `task.spill`."""
        cfg = self.cfg
        reader = Reader(
            task.source,
            cfg.text_field,
            cfg.id_field,
            cfg.max_line_bytes,
            cfg.max_file_bytes,
            cfg.on_bad_utf8,
        )
        counters = FileCounters()
        batch: list[Event] = []
        with open(task.spill, "wb") as out:
            for item in reader.read(task.path):
                if isinstance(item, Problem):
                    batch.append(Unreadable(item.kind, item.file, item.line, item.detail[:300]))
                else:
                    batch.append(self.document(item, counters))
                if len(batch) >= BATCH:
                    pickle.dump(batch, out, protocol=pickle.HIGHEST_PROTOCOL)
                    batch = []
            pickle.dump(batch, out, protocol=pickle.HIGHEST_PROTOCOL)
        counters.bytes_in = reader.bytes_in
        counters.bad_utf8_replaced = reader.repaired_utf8 + reader.text.replaced
        counters.encoding, counters.skipped = reader.encoding, reader.skipped
        return FileResult(task.spill, counters)


def replay(spill: str) -> Iterator[Event]:
    """Events of a spill file, in order; the file is deleted afterwards."""
    with open(spill, "rb") as f:
        while True:
            try:
                yield from pickle.load(f)
            except EOFError:
                break
    Path(spill).unlink()
