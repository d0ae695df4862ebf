"""Readers: input arguments → files → `Document`s (or `Problem`s), streamed.

Inputs: local files, directories (recursive), globs, `s3://bucket/prefix`, and `hf://org/name
[:config][@split]` (Hugging Face datasets, streaming). `NAME=INPUT` names the source (used by
`ingest.source_weights`); otherwise the source is the input's base name. Formats by suffix, each
optionally `.gz`/`.zst`: `.txt`/`.md` (one document per file), `.jsonl`/`.ndjson` (one per line),
`.json` (an array of records or one record), `.parquet` (one per row). Text formats are UTF-8,
or UTF-16/UTF-32 with a byte-order mark (encoding.py).

`scan` lists every file an input names, and says why each one it will not read is skipped
(`unsupported extension .bz2`, `no extension`, `broken symlink`, `symlink loop`, ...): the
skipped files appear in stats.json too, so nothing found under an input goes unaccounted.
"""

from __future__ import annotations

import glob
import io
import json
import os
import stat
from collections.abc import Iterator
from typing import NamedTuple

from kiln.components.ingest.document import Document, Problem, ReadError
from kiln.components.ingest.encoding import TextStream
from kiln.components.ingest.streams import (
    CANNOT_OPEN,
    compression,
    iter_chunks,
    iter_lines,
    os_reason,
    read_bounded,
)

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


def unsupported(path: str) -> str | None:
    """Why a file name is not a supported format (`unsupported extension .bz2`), or None."""
    if file_format(path):
        return None
    name = os.path.basename(path.rstrip("/")).lower()
    comp = compression(name)
    inner = os.path.splitext(name[: name.rfind(".")] if comp else name)[1]
    if not inner and not comp:
        return "no extension"
    return f"unsupported extension {inner}{'.' + comp if comp else ''}"


def skip_reason(path: str) -> str | None:
    """Why a local file found under an input is not read, or None when it is read."""
    try:
        st = os.stat(path)
    except OSError as e:
        return os_reason(e, path)
    if stat.S_ISDIR(st.st_mode):
        return "symlink to a directory (not followed)"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    return unsupported(path)


class Skipped(NamedTuple):
    """A file found under an input that is not read, and why."""

    path: str
    reason: str


class Found(NamedTuple):
    """What one input argument names: files to read and files skipped, each sorted by path."""

    files: list[str]
    skipped: list[Skipped]


def _walk(root: str) -> Iterator[tuple[str, str | None]]:
    """(path, skip reason or None) for every entry under a directory but real subdirectories."""
    errors: list[OSError] = []
    for top, dirs, files in os.walk(root, onerror=errors.append):
        for d in dirs:
            if os.path.islink(os.path.join(top, d)):  # not descended into (os.walk default)
                yield os.path.join(top, d), "symlink to a directory (not followed)"
        for f in files:  # broken links and link loops land here too
            yield os.path.join(top, f), skip_reason(os.path.join(top, f))
    for e in errors:
        yield str(e.filename), f"unreadable directory: {(e.strerror or str(e)).lower()}"


def scan(arg: str) -> Found:
    """The files named by one input argument, and those found but skipped (with reasons)."""
    if arg.startswith("hf://"):
        from kiln.components.ingest import hf

        return Found(hf.resolve(arg), [])
    if arg.startswith("s3://"):
        from kiln.components.common import storage

        entries = [(f, unsupported(f)) for f in storage.list_files(arg)]
    elif any(c in arg for c in "*?["):
        matches = glob.glob(arg, recursive=True)
        entries = [
            (p, skip_reason(p)) for p in matches if os.path.islink(p) or not os.path.isdir(p)
        ]
    elif os.path.isdir(arg):
        entries = list(_walk(arg))
    elif os.path.lexists(arg):
        entries = [(arg, skip_reason(arg))]
    else:
        entries = []
    entries.sort()
    return Found(
        [p for p, why in entries if why is None],
        [Skipped(p, why) for p, why in entries if why is not None],
    )


def expand(arg: str) -> list[str]:
    """Files named by one input argument that will be read, sorted (see `scan`)."""
    return scan(arg).files


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
        self.text = TextStream(replace=on_bad_utf8 == "replace")
        self.skipped = ""  # why the file could not be opened; then it yielded nothing

    def _chunks(self, path: str) -> Iterator[bytes]:
        for chunk in iter_chunks(path, self.max_file):
            self.bytes_in += len(chunk)
            yield chunk

    def _text_chunks(self, path: str) -> Iterator[bytes]:
        """UTF-8 bytes of a text-format file (transcoded from UTF-16/32, binary refused)."""
        return self.text(self._chunks(path))

    @property
    def encoding(self) -> str:
        return self.text.encoding

    def read(self, path: str) -> Iterator[Document | Problem]:
        """Every record of `path`; an error mid-file yields a Problem after the good records.

        A file that cannot be opened yields nothing and sets `skipped` to the reason.
        """
        fmt = PARQUET if path.startswith("hf::") else file_format(path)
        try:
            if fmt is None:
                self.skipped = unsupported(path) or "unsupported format"
            elif fmt == TEXT:
                yield from self._read_text(path)
            elif fmt == JSONL:
                yield from self._read_jsonl(path)
            elif fmt == JSON:
                yield from self._read_json(path)
            else:
                yield from self._read_parquet(path)
        except ReadError as e:
            if e.kind == CANNOT_OPEN:
                self.skipped = e.detail
            else:
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
        raw = read_bounded(self._text_chunks(path), self.max_line)
        if raw is None:
            yield Problem(
                "too_large", path, 1, f"document over ingest.max_line_bytes={self.max_line}"
            )
            return
        text = self.decode(raw, path, 1)
        yield text if isinstance(text, Problem) else Document(f"{path}", text, self.source, path, 1)

    def _read_jsonl(self, path: str) -> Iterator[Document | Problem]:
        for line, raw in iter_lines(self._text_chunks(path), self.max_line):
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
        raw = read_bounded(self._text_chunks(path), self.max_line)
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
