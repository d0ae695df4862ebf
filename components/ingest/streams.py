"""Bounded byte streams: local or s3:// files, optionally .gz/.zst, split into bounded lines.

Every reader goes through `iter_chunks`, which caps the decompressed size of a file (a compression
bomb stops with `decompressed_too_large`) and turns truncated or corrupt archives into a
`ReadError` after the good data before the damage has been delivered; a file that cannot be
opened at all raises `ReadError(CANNOT_OPEN, reason)`, and the file is reported as skipped.
`iter_lines` never holds more than `max_line` bytes of one line: a longer line is skipped to its
end and reported. Lines end at LF, CRLF or a lone CR (old Mac files).
"""

from __future__ import annotations

import errno
import gzip
import os
import re
import zlib
from collections.abc import Iterator
from typing import IO

from kiln.components.ingest.document import ReadError

CHUNK = 1 << 20
CANNOT_OPEN = "cannot_open"  # ReadError kind: the file is skipped, with the error as reason
_EOL = re.compile(rb"\r\n?|\n")


def os_reason(e: OSError, path: str) -> str:
    """Why a local file cannot be opened, in the words stats.json uses for skipped files."""
    if e.errno == errno.ELOOP:
        return "symlink loop"
    if e.errno == errno.ENOENT and os.path.islink(path):
        return "broken symlink"
    return f"unreadable: {(e.strerror or str(e)).lower()}"


def open_raw(path: str) -> IO[bytes]:
    """Binary file object for a local path or an s3:// URI (via the project's storage layer)."""
    if path.startswith("s3://"):
        from kiln.components.common import storage

        return storage.open_read(path)
    return open(path, "rb")


def compression(path: str) -> str:
    """'gz', 'zst' or '' from the file name."""
    if path.endswith(".gz"):
        return "gz"
    if path.endswith(".zst") or path.endswith(".zstd"):
        return "zst"
    return ""


def _gz_chunks(raw: IO[bytes]) -> Iterator[bytes]:
    f = gzip.GzipFile(fileobj=raw)
    try:
        while chunk := f.read1(CHUNK):  # read1: what is decoded so far survives a truncation
            yield chunk
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
        raise ReadError("corrupt_gzip", f"truncated or corrupt gzip stream ({e})") from e


def _zst_chunks(raw: IO[bytes]) -> Iterator[bytes]:
    import zstandard

    dobj = zstandard.ZstdDecompressor().decompressobj()
    eof = True
    try:
        # Small input steps keep one call's output bounded (zstd expands at most ~32k:1).
        while data := raw.read(4096):
            while data:
                if dobj.eof:  # a new frame (multi-frame file)
                    dobj = zstandard.ZstdDecompressor().decompressobj()
                out = dobj.decompress(data)
                data = dobj.unused_data if dobj.eof else b""
                if out:
                    yield out
            eof = dobj.eof
    except zstandard.ZstdError as e:
        raise ReadError("corrupt_zstd", f"corrupt zstd stream ({e})") from e
    if not eof:
        raise ReadError("corrupt_zstd", "truncated zstd stream (frame not finished)")


def iter_chunks(path: str, max_bytes: int) -> Iterator[bytes]:
    """Decompressed bytes of `path` in chunks; at most `max_bytes` in total."""
    try:
        raw = open_raw(path)
    except OSError as e:
        raise ReadError(CANNOT_OPEN, os_reason(e, path)) from e
    except Exception as e:  # storage errors from S3 (missing key, auth)
        raise ReadError(CANNOT_OPEN, f"unreadable: {type(e).__name__}: {e}") from e
    with raw:
        kind = compression(path)
        if kind == "gz":
            chunks = _gz_chunks(raw)
        elif kind == "zst":
            chunks = _zst_chunks(raw)
        else:
            chunks = iter(lambda: raw.read(CHUNK), b"")
        total = 0
        try:
            for chunk in chunks:
                total += len(chunk)
                if total > max_bytes:
                    raise ReadError(
                        "decompressed_too_large",
                        f"more than ingest.max_file_bytes={max_bytes} bytes after decompression",
                    )
                yield chunk
        except OSError as e:
            raise ReadError("unreadable_file", str(e)) from e


def iter_lines(chunks: Iterator[bytes], max_line: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number from 1, bytes without the newline), or (n, None) for a line over `max_line`.

    LF, CRLF and a lone CR all end a line (a raw CR cannot occur inside a JSON string).
    """
    buf = bytearray()
    lineno, skipping, after_cr = 1, False, False
    for chunk in chunks:
        if after_cr and chunk[:1] == b"\n":  # the LF of a CRLF split across two chunks
            chunk = chunk[1:]
        after_cr = chunk[-1:] == b"\r"
        start = 0
        for end in _EOL.finditer(chunk):
            piece = chunk[start : end.start()]
            if not skipping and len(buf) + len(piece) <= max_line:
                buf += piece
            else:
                skipping = True
            yield lineno, (None if skipping else bytes(buf))
            buf.clear()
            lineno, skipping, start = lineno + 1, False, end.end()
        piece = chunk[start:]
        if not skipping and len(buf) + len(piece) > max_line:
            skipping = True
            buf.clear()
        elif not skipping:
            buf += piece
    if skipping or buf:
        yield lineno, (None if skipping else bytes(buf))


def read_bounded(chunks: Iterator[bytes], max_size: int) -> bytes | None:
    """All bytes of a stream, or None as soon as it passes `max_size` (the rest is not read)."""
    buf = bytearray()
    for chunk in chunks:
        if len(buf) + len(chunk) > max_size:
            return None
        buf += chunk
    return bytes(buf)
