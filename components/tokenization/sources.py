"""What `kiln tokenize` reads: an ingest dataset directory, or plain text files.

An ingest dataset (`train/*.parquet`, `val/*.parquet` with a `text` column) is split into work
units of one parquet row group each, which worker processes read themselves. Plain text (`.txt`
file, or a directory of them) is a handy shortcut: each file is one document, and every 100th
piece of text (at least the last one) is held out for validation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from kiln.components.tokenization.bpe import iter_segments
from kiln.components.tokenization.shards import sha256_file

SPLITS = ("train", "val")
TEXT_SUFFIXES = (".txt", ".md")


def is_dataset_dir(path: Path) -> bool:
    """True for an ingest output directory (has train/ parquet shards)."""
    return path.is_dir() and any((path / "train").glob("*.parquet"))


def dataset_files(path: Path, split: str) -> list[Path]:
    """Parquet shards of one split, in name order."""
    return sorted((path / split).glob("*.parquet"))


def text_files(path: Path) -> list[Path]:
    """The .txt/.md files of a plain-text input (one file, or a directory searched recursively)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
    raise FileNotFoundError(f"--dataset {path} does not exist")


def units(path: Path, split: str) -> list[tuple[str, int]]:
    """(parquet file, row group) work units of a split, in a fixed order."""
    out = []
    for f in dataset_files(path, split):
        meta = pq.ParquetFile(f).metadata
        if "text" not in meta.schema.names:
            raise ValueError(f"{f}: no 'text' column (columns: {', '.join(meta.schema.names)})")
        out += [(str(f), rg) for rg in range(meta.num_row_groups)]
    return out


def read_unit(unit: tuple[str, int]) -> list[str]:
    """The texts of one row group (nulls become empty strings)."""
    path, rg = unit
    column = pq.ParquetFile(path).read_row_group(rg, columns=["text"]).column("text")
    return [t or "" for t in column.to_pylist()]


def iter_texts(path: Path, split: str) -> Iterator[str]:
    """Every document of a split of a dataset directory, streamed."""
    for unit in units(path, split):
        yield from read_unit(unit)


def iter_text_pieces(path: Path, piece_chars: int) -> Iterator[tuple[str, str, bool]]:
    """(split, text, ends_document) for plain-text input; files are read one at a time."""
    n = 0
    pending: tuple[str, bool] | None = None
    for f in text_files(path):
        text = f.read_text(encoding="utf-8", errors="replace")
        # Small files are cut finer so that even a single file yields a validation piece.
        pieces = list(iter_segments(text, min(piece_chars, max(256, len(text) // 20)))) or [""]
        for i, piece in enumerate(pieces):
            if pending is not None:
                n += 1
                yield ("val" if n % 100 == 0 else "train"), pending[0], pending[1]
            pending = (piece, i == len(pieces) - 1)
    if pending is None:
        raise ValueError(f"--dataset {path}: no .txt or .md files found")
    yield ("val" if n >= 1 else "train"), pending[0], True


def digest(path: Path) -> str:
    """sha256 over the input's files (relative names and contents): the dataset's identity."""
    h = hashlib.sha256()
    if is_dataset_dir(path):
        files = [f for s in SPLITS for f in dataset_files(path, s)]
        if (path / "stats.json").exists():
            files.append(path / "stats.json")
    else:
        files = text_files(path)
    for f in files:
        rel = f.relative_to(path) if path.is_dir() else Path(f.name)
        h.update(f"{rel}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()
