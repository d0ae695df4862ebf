"""Bounded byte streams: local or s3:// files, optionally .gz/.zst, split into bounded lines.

Every reader goes through `iter_chunks`, which caps the decompressed size of a file (a compression
bomb stops with `decompressed_too_large`) and turns truncated or corrupt archives into a
`ReadError` after the good data before the damage has been delivered. `iter_lines` never holds
more than `max_line` bytes of one line: a longer line is skipped to its end and reported.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from typing import IO

from kiln.components.ingest.document import ReadError

CHUNK = 1 << 20


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
        raise ReadError("unreadable_file", str(e)) from e
    except Exception as e:  # storage errors from S3 (missing key, auth)
        raise ReadError("unreadable_file", f"{type(e).__name__}: {e}") from e
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
    """(line number from 1, bytes without the newline), or (n, None) for a line over `max_line`."""
    buf = bytearray()
    lineno, skipping = 1, False
    for chunk in chunks:
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            piece = chunk[start:] if nl < 0 else chunk[start:nl]
            if not skipping:
                if len(buf) + len(piece) > max_line:
                    skipping = True
                    buf.clear()
                else:
                    buf += piece
            if nl < 0:
                break
            yield lineno, (None if skipping else bytes(buf))
            buf.clear()
            lineno, skipping, start = lineno + 1, False, nl + 1
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
