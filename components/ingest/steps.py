"""The per-document work done in worker processes: normalize, language, filters, PII, features.

`process_file` streams one input file through the steps and spills every outcome, in input order,
to a pickle stream on disk (bounded memory on both sides); the parent replays it to count, dedup
and write. Events: ("problem", kind, file, line, detail), ("drop", reason, file, line, id, text
head), ("doc", id, text, source, file, line, exact_key, signature, band_keys).
"""

from __future__ import annotations

import pickle
from pathlib import Path

from kiln.components.common.config import IngestConfig
from kiln.components.ingest import filters as filters_mod
from kiln.components.ingest.dedup import MinHasher, exact_key
from kiln.components.ingest.document import Problem
from kiln.components.ingest.language import detect
from kiln.components.ingest.normalize import normalize, redact_pii
from kiln.components.ingest.readers import Reader

BATCH = 256
_state: dict = {}


def init(cfg: IngestConfig) -> None:
    """Build the steps once per worker process."""
    _state.update(
        cfg=cfg,
        filters=filters_mod.build(cfg.filters),
        minhash=MinHasher(cfg.dedup) if cfg.dedup.near else None,
        langs=set(cfg.languages),
    )


def ensure_init(cfg: IngestConfig) -> None:
    """`init` unless this process is already set up for `cfg` (long-lived Ray workers)."""
    if _state.get("cfg") != cfg:
        init(cfg)


def _doc_event(doc, counters: dict) -> tuple:
    cfg: IngestConfig = _state["cfg"]
    text, removed = normalize(doc.text)
    if removed:
        counters["control_chars_removed"] = counters.get("control_chars_removed", 0) + removed
    if not text.strip():
        return ("drop", "empty", doc.file, doc.line, doc.id, "")
    if _state["langs"]:
        lang, score = detect(text)
        if lang not in _state["langs"] or score < cfg.min_lang_score:
            return (
                "drop",
                "language",
                doc.file,
                doc.line,
                doc.id,
                f"[{lang} {score:.2f}] {text[:160]}",
            )
    reason = filters_mod.apply(_state["filters"], text)
    if reason:
        return ("drop", reason, doc.file, doc.line, doc.id, text[:200])
    if cfg.redact_pii:
        text = redact_pii(text, counters.setdefault("pii", {}))
    sig = bands = None
    if _state["minhash"] is not None:
        sig = _state["minhash"].signature(text)
        bands = _state["minhash"].band_keys(sig)
    return ("doc", doc.id, text, doc.source, doc.file, doc.line, exact_key(text), sig, bands)


def process_file(task: tuple[str, str, str]) -> tuple[str, dict]:
    """Run the steps over one input file; returns (spill file, counters)."""
    source, path, spill = task
    cfg: IngestConfig = _state["cfg"]
    reader = Reader(
        source,
        cfg.text_field,
        cfg.id_field,
        cfg.max_line_bytes,
        cfg.max_file_bytes,
        cfg.on_bad_utf8,
    )
    counters: dict = {}
    batch: list[tuple] = []
    with open(spill, "wb") as out:
        for item in reader.read(path):
            if isinstance(item, Problem):
                batch.append(("problem", item.kind, item.file, item.line, item.detail[:300]))
            else:
                batch.append(_doc_event(item, counters))
            if len(batch) >= BATCH:
                pickle.dump(batch, out, protocol=pickle.HIGHEST_PROTOCOL)
                batch = []
        pickle.dump(batch, out, protocol=pickle.HIGHEST_PROTOCOL)
    counters["bytes_in"] = reader.bytes_in
    counters["bad_utf8_replaced"] = reader.repaired_utf8
    return spill, counters


def replay(spill: str):
    """Events of a spill file, in order; the file is deleted afterwards."""
    with open(spill, "rb") as f:
        while True:
            try:
                yield from pickle.load(f)
            except EOFError:
                break
    Path(spill).unlink()
