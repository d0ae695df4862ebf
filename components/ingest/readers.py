"""Readers: input arguments → files → `Document`s (or `Problem`s), streamed.

Inputs: local files, directories (recursive), globs, `s3://bucket/prefix`, and `hf://org/name
[:config][@split]` (Hugging Face datasets, streaming). `NAME=INPUT` names the source (used by
`ingest.source_weights`); otherwise the source is the input's base name. Formats by suffix, each
optionally `.gz`/`.zst`: `.txt`/`.md` (one document per file), `.jsonl`/`.ndjson` (one per line),
`.json` (an array of records or one record), `.parquet` (one per row).
"""

from __future__ import annotations

import glob
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

from kiln.components.ingest.document import Document, Problem, ReadError
from kiln.components.ingest.streams import compression, iter_chunks, iter_lines, read_bounded

TEXT, JSONL, JSON, PARQUET = "text", "jsonl", "json", "parquet"
FORMATS = {".txt": TEXT, ".md": TEXT, ".jsonl": JSONL, ".ndjson": JSONL, ".json": JSON}
FORMATS[".parquet"] = PARQUET


def file_format(path: str) -> str | None:
    """Format of a file from its suffix (after a .gz/.zst suffix), else None."""
    name = path.lower()
    kind = compression(name)
    if kind:
        name = name[: name.rfind(".")]
    return FORMATS.get(os.path.splitext(name)[1])


def split_source(arg: str) -> tuple[str, str]:
    """`name=input` → (name, input); otherwise the input's last path component (no suffixes)."""
    head, sep, rest = arg.partition("=")
    if sep and "/" not in head and ":" not in head and head:
        return head, rest
    base = arg.rstrip("/").split("/")[-1].split("@")[0].split(":")[0] or arg
    return base.split(".")[0] or base, arg


def expand(arg: str) -> list[str]:
    """Files named by one input argument, sorted; hf:// inputs are returned as they are."""
    if arg.startswith("hf://"):
        from kiln.components.ingest import hf

        return hf.resolve(arg)
    if arg.startswith("s3://"):
        from kiln.components.common import storage

        found = storage.list_files(arg)
        return [f for f in found if file_format(f)] if len(found) != 1 else found
    if any(c in arg for c in "*?["):
        return sorted(p for p in glob.glob(arg, recursive=True) if os.path.isfile(p))
    path = Path(arg)
    if path.is_dir():
        # Broken links are listed too: they surface as `unreadable_file`, not silently skipped.
        found = (p for p in path.rglob("*") if p.is_file() or p.is_symlink())
        return sorted(str(p) for p in found if file_format(str(p)))
    return [arg] if path.exists() else []


class Reader:
    """Yields Documents and Problems from one file; counts the bytes it read in `bytes_in`."""

    def __init__(
        self,
        source: str,
        text_field: str,
        id_field: str,
        max_line: int,
        max_file: int,
        on_bad_utf8: str,
    ):
        self.source, self.text_field, self.id_field = source, text_field, id_field
        self.max_line, self.max_file, self.on_bad_utf8 = max_line, max_file, on_bad_utf8
        self.bytes_in = 0
        self.repaired_utf8 = 0

    def _chunks(self, path: str) -> Iterator[bytes]:
        for chunk in iter_chunks(path, self.max_file):
            self.bytes_in += len(chunk)
            yield chunk

    def read(self, path: str) -> Iterator[Document | Problem]:
        """Every record of `path`; an error mid-file yields a Problem after the good records."""
        fmt = PARQUET if path.startswith("hf::") else file_format(path)
        try:
            if fmt is None:
                yield Problem(
                    "unsupported_format",
                    path,
                    0,
                    "expected .txt .md .jsonl .json .parquet (+.gz/.zst)",
                )
            elif fmt == TEXT:
                yield from self._read_text(path)
            elif fmt == JSONL:
                yield from self._read_jsonl(path)
            elif fmt == JSON:
                yield from self._read_json(path)
            else:
                yield from self._read_parquet(path)
        except ReadError as e:
            yield Problem(e.kind, path, 0, e.detail)

    def decode(self, raw: bytes, path: str, line: int) -> str | Problem:
        """UTF-8 decode (BOM dropped); invalid bytes replaced (counted) or the record skipped."""
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            if self.on_bad_utf8 == "skip":
                return Problem("bad_utf8", path, line, str(e))
            self.repaired_utf8 += 1
            return raw.decode("utf-8-sig", errors="replace")

    def record(self, obj: object, path: str, line: int) -> Document | Problem:
        """A JSON/parquet record → Document, or the Problem with it."""
        if not isinstance(obj, dict):
            return Problem(
                "not_an_object", path, line, f"expected a JSON object, got {type(obj).__name__}"
            )
        text = obj.get(self.text_field)
        if text is None:
            return Problem("missing_text", path, line, f"no {self.text_field!r} field")
        if not isinstance(text, str):
            return Problem(
                "text_not_string", path, line, f"{self.text_field!r} is {type(text).__name__}"
            )
        rid = obj.get(self.id_field)
        rid = (
            str(rid)
            if isinstance(rid, str | int) and not isinstance(rid, bool)
            else f"{path}:{line}"
        )
        return Document(id=rid, text=text, source=self.source, file=path, line=line)

    def _read_text(self, path: str) -> Iterator[Document | Problem]:
        raw = read_bounded(self._chunks(path), self.max_line)
        if raw is None:
            yield Problem(
                "too_large", path, 1, f"document over ingest.max_line_bytes={self.max_line}"
            )
            return
        text = self.decode(raw, path, 1)
        yield text if isinstance(text, Problem) else Document(f"{path}", text, self.source, path, 1)

    def _read_jsonl(self, path: str) -> Iterator[Document | Problem]:
        for line, raw in iter_lines(self._chunks(path), self.max_line):
            if raw is None:
                yield Problem(
                    "line_too_long", path, line, f"over ingest.max_line_bytes={self.max_line}"
                )
                continue
            if not raw.strip():
                continue  # blank separator lines are not records
            text = self.decode(raw, path, line)
            if isinstance(text, Problem):
                yield text
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                yield Problem("bad_json", path, line, str(e))
                continue
            yield self.record(obj, path, line)

    def _read_json(self, path: str) -> Iterator[Document | Problem]:
        raw = read_bounded(self._chunks(path), self.max_line)
        if raw is None:
            yield Problem(
                "too_large", path, 1, f"JSON file over ingest.max_line_bytes={self.max_line}"
            )
            return
        text = self.decode(raw, path, 1)
        if isinstance(text, Problem):
            yield text
            return
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            yield Problem("bad_json", path, e.lineno, str(e))
            return
        for i, obj in enumerate(data if isinstance(data, list) else [data]):
            yield self.record(obj, path, i + 1)

    def _read_parquet(self, path: str) -> Iterator[Document | Problem]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            if path.startswith("hf::"):
                from kiln.components.ingest import hf

                f, size = hf.open_file(path)
                self.bytes_in += size
                pf = pq.ParquetFile(f)
            elif path.startswith("s3://") or compression(path):
                data = read_bounded(self._chunks(path), self.max_file)
                if data is None:
                    raise ReadError(
                        "decompressed_too_large", f"over ingest.max_file_bytes={self.max_file}"
                    )
                pf = pq.ParquetFile(io.BytesIO(data))
            else:
                self.bytes_in += os.path.getsize(path)
                pf = pq.ParquetFile(path)
            names = pf.schema_arrow.names
            if self.text_field not in names:
                raise ReadError(
                    "missing_text", f"no column {self.text_field!r} (columns: {', '.join(names)})"
                )
            cols = [self.text_field] + ([self.id_field] if self.id_field in names else [])
            row = 0
            for batch in pf.iter_batches(batch_size=1024, columns=cols):
                for obj in batch.to_pylist():
                    row += 1
                    yield self.record(obj, path, row)
        except (pa.ArrowException, OSError) as e:
            raise ReadError("corrupt_parquet", str(e)) from e
