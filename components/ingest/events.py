"""What flows between ingest's workers and its driver: one task per input file, one event per record.

A worker turns a `FileTask` into a spill file of events, in input order, and a `FileResult`; the
driver replays the events and matches them by type:

- `Unreadable`: input that never became a document (bad JSON, truncated archive, ...);
- `Dropped`: a document a per-document step rejected (empty, language, a quality filter);
- `Kept`: a document that passed every per-document step, with its dedup keys — the driver may
  still drop it as a duplicate or by per-source sampling.

Events are NamedTuples: cheap to pickle by the million, read by field name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np


class FileTask(NamedTuple):
    """One input file for a worker: its source name, its path or URI, where to spill events."""

    source: str
    path: str
    spill: str


@dataclass
class FileCounters:
    """Per-file facts the events do not carry: bytes read, repairs made to kept text, the text
    encoding found, and why the file was skipped when it could not be opened at all."""

    bytes_in: int = 0
    bad_utf8_replaced: int = 0
    control_chars_removed: int = 0
    pii: dict[str, int] = field(default_factory=dict)
    encoding: str = ""  # of a text format: utf-8, or utf-16-le/-be, utf-32-le/-be (BOM)
    skipped: str = ""  # e.g. "unreadable: permission denied"; the file then has no events

    def repaired(self) -> dict[str, int]:
        """The non-zero repair counts, by the names `Stats.repaired` uses."""
        counts = {
            "bad_utf8_replaced": self.bad_utf8_replaced,
            "control_chars_removed": self.control_chars_removed,
        }
        return {k: v for k, v in counts.items() if v}


class FileResult(NamedTuple):
    """A worker's answer for one `FileTask`: the spill file of its events and its counters."""

    spill: str
    counters: FileCounters


class Unreadable(NamedTuple):
    """A record that could not become a document; counted under `unreadable[kind]`."""

    kind: str
    file: str
    line: int
    detail: str


class Dropped(NamedTuple):
    """A document a per-document step rejected; `head` is the start of its text, for examples."""

    reason: str
    file: str
    line: int
    doc_id: str
    head: str


class Kept(NamedTuple):
    """A normalized document that passed every filter, with its exact and near-dedup keys."""

    doc_id: str
    text: str
    source: str
    file: str
    line: int
    exact_key: bytes
    signature: np.ndarray | None  # MinHash signature; None when near dedup is off
    band_keys: list[bytes] | None


Event = Unreadable | Dropped | Kept
