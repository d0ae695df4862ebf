"""Deterministic train/val split, per-source sampling, and bounded parquet shards.

Split: a document goes to val when blake2b(salt, id) as a fraction in [0, 1) is below
`val_fraction` — independent of order, worker count and the rest of the corpus. Sampling weights:
weight w keeps floor(w) copies plus one more with probability frac(w), drawn from the id's hash
(so the same documents are picked every run); copies get ids `id#1`, `id#2`… and share the
original's split, so no text leaks between train and val.

Both splits stay non-empty whenever there are two documents (`SplitWriter`): if no document
hashes below `val_fraction`, the one with the lowest hash goes to val anyway (and if all do,
the one with the highest hash goes to train). That depends only on the set of documents.
`val_fraction=0` asks for no val split and gets none.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("source", pa.string())])
ROW_GROUP = 1024  # rows per parquet row group, and at most ROW_GROUP_BYTES of text:
ROW_GROUP_BYTES = 2 << 20  # a row group is one `kiln tokenize` task, so keep them small


def unit_hash(salt: str, key: str) -> float:
    """A stable pseudo-random number in [0, 1) for `key`."""
    digest = hashlib.blake2b(f"{salt}\0{key}".encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(digest.digest(), "little") / 2**64


def split_of(doc_id: str, val_fraction: float, seed: int) -> str:
    """'val' or 'train' for a document id (deterministic)."""
    return "val" if unit_hash(f"split{seed}", doc_id) < val_fraction else "train"


def copies(doc_id: str, weight: float) -> int:
    """How many times a document is written under sampling weight `weight` (deterministic)."""
    whole = int(weight)
    return whole + (1 if unit_hash("sample", doc_id) < weight - whole else 0)


class ShardWriter:
    """Writes one split as `NNNNN.parquet` files of at most ~`max_bytes` text bytes each."""

    def __init__(self, directory: Path, max_bytes: int):
        self.dir, self.max_bytes = directory, max_bytes
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rows: list[tuple[str, str, str]] = []
        self.writer: pq.ParquetWriter | None = None
        self.shard_bytes = self.group_bytes = 0
        self.files: list[str] = []
        self.docs = self.bytes = 0

    def add(self, doc_id: str, text: str, source: str) -> None:
        nbytes = len(text.encode("utf-8", "surrogatepass"))
        if (self.writer is not None or self.rows) and self.shard_bytes + nbytes > self.max_bytes:
            self._flush()
            self._close_shard()
        self.rows.append((doc_id, text, source))
        self.shard_bytes += nbytes
        self.group_bytes += nbytes
        self.docs += 1
        self.bytes += nbytes
        if len(self.rows) >= ROW_GROUP or self.group_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self.rows:
            return
        if self.writer is None:
            path = self.dir / f"{len(self.files):05d}.parquet"
            self.files.append(path.name)
            self.writer = pq.ParquetWriter(path, SCHEMA, compression="zstd")
        ids, texts, sources = zip(*self.rows, strict=True)
        table = pa.table([list(ids), list(texts), list(sources)], schema=SCHEMA)
        self.writer.write_table(table, row_group_size=len(self.rows))
        self.rows, self.group_bytes = [], 0

    def _close_shard(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer, self.shard_bytes = None, 0

    def close(self) -> None:
        """Flush and close; a split with no documents still gets one empty shard."""
        if self.writer is None and not self.rows and not self.files:
            self.writer = pq.ParquetWriter(self.dir / "00000.parquet", SCHEMA, compression="zstd")
            self.files.append("00000.parquet")
        self._flush()
        self._close_shard()


SPLITS = ("train", "val")


class _Doc(NamedTuple):
    rank: float  # lower = closer to the other split's side of `val_fraction`
    doc_id: str
    text: str
    source: str
    copies: int


class SplitWriter:
    """Writes documents to `train/` and `val/` by `split_of`, keeping both splits non-empty.

    While one split has no document, the other holds back its document nearest to the
    `val_fraction` boundary (one document in memory); it is written to its own split as soon
    as the empty one gets a document of its own, or moved there by `close()`.
    """

    def __init__(self, out: Path, max_bytes: int, val_fraction: float, seed: int):
        self.writers = {s: ShardWriter(out / s, max_bytes) for s in SPLITS}
        self.val_fraction, self.seed = val_fraction, seed
        self.docs = dict.fromkeys(SPLITS, 0)  # distinct documents assigned, held ones included
        self.held: dict[str, _Doc | None] = dict.fromkeys(SPLITS)
        self.moved_in = dict.fromkeys(SPLITS, 0)

    def add(self, doc_id: str, text: str, source: str, copies: int) -> None:
        """One kept document and how many copies of it to write (sampling weight)."""
        h = unit_hash(f"split{self.seed}", doc_id)
        split = "val" if h < self.val_fraction else "train"
        other = "train" if split == "val" else "val"
        self.docs[split] += 1
        if self.held[other] is not None:  # the other split's candidate is no longer needed
            self._write(other, self.held[other])
            self.held[other] = None
        doc = _Doc(h if split == "train" else -h, doc_id, text, source, copies)
        if self.val_fraction > 0 and self.docs[other] == 0:
            held = self.held[split]
            if held is None or doc.rank < held.rank:
                self.held[split], doc = doc, held
        if doc is not None:
            self._write(split, doc)

    def _write(self, split: str, doc: _Doc) -> None:
        for i in range(doc.copies):
            doc_id = doc.doc_id if i == 0 else f"{doc.doc_id}#{i}"
            self.writers[split].add(doc_id, doc.text, doc.source)

    def close(self) -> dict[str, dict[str, int]]:
        """Write held documents, close the shards; per split {docs, bytes, shards, moved_in}."""
        for split, other in (("train", "val"), ("val", "train")):
            doc, self.held[split] = self.held[split], None
            if doc is None:
                continue
            if self.docs[other] == 0 and self.docs[split] >= 2:  # move it: both non-empty
                self.docs[split] -= 1
                self.docs[other] += 1
                self.moved_in[other] += 1
                split = other
            self._write(split, doc)
        out = {}
        for name, w in self.writers.items():
            w.close()
            out[name] = {
                "docs": w.docs,
                "bytes": w.bytes,
                "shards": len(w.files),
                "moved_in": self.moved_in[name],
            }
        return out
