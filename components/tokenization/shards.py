"""Binary token shards: the one on-disk format between tokenization and pretraining.

Layout of a shard file (little-endian):

    offset  size  field
    0       8     magic  b"KILNTOK\\x00"
    8       4     format version (uint32, currently 1)
    12      4     bytes per token id (uint32: 2 = uint16, 4 = uint32)
    16      8     number of tokens (uint64)
    24      8     reserved, zero
    32      ...   token ids, raw little-endian, `count * itemsize` bytes, nothing after

uint16 is used when the vocabulary has fewer than 65536 ids, else uint32. Readers check every header
field and the exact file size, so a truncated or foreign file is refused with a clear error instead of
silently training on garbage. Reading is a zero-copy memory map.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import numpy as np

MAGIC = b"KILNTOK\x00"
VERSION = 1
HEADER = struct.Struct("<8sIIQQ")  # magic, version, itemsize, count, reserved
HEADER_SIZE = HEADER.size  # 32
_DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<u4")}


class ShardError(ValueError):
    """A token shard is missing, truncated, corrupt or not a Kiln shard."""


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """The smallest id dtype that holds every id of a vocabulary of this size."""
    return _DTYPES[2] if vocab_size <= 65536 else _DTYPES[4]


def write_shard(path: str | Path, tokens: np.ndarray, vocab_size: int | None = None) -> str:
    """Write ids to `path` atomically (temp file + rename) and return the file's sha256.

    Args:
        path: destination file (conventionally `*.bin`).
        tokens: 1-D array of non-negative token ids.
        vocab_size: picks uint16 vs uint32; default from the largest id present.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
    if tokens.size and int(tokens.min()) < 0:
        raise ValueError("token ids must be non-negative")
    top = int(tokens.max()) + 1 if tokens.size else 1
    dtype = dtype_for_vocab(max(vocab_size or 0, top))
    if tokens.size and top > np.iinfo(dtype).max + 1:
        raise ValueError(f"token id {top - 1} does not fit {dtype}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    header = HEADER.pack(MAGIC, VERSION, dtype.itemsize, tokens.size, 0)
    digest = hashlib.sha256(header)
    body = tokens.astype(dtype, copy=False).tobytes()
    digest.update(body)
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return digest.hexdigest()


def read_header(path: str | Path) -> tuple[np.dtype, int]:
    """Validate a shard's header and size; return (dtype, token count)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(HEADER_SIZE)
    except OSError as e:
        raise ShardError(f"{path}: cannot read token shard: {e}") from e
    if len(raw) < HEADER_SIZE:
        raise ShardError(
            f"{path}: {size} bytes is shorter than the {HEADER_SIZE}-byte shard header"
        )
    magic, version, itemsize, count, _ = HEADER.unpack(raw)
    if magic != MAGIC:
        raise ShardError(f"{path}: not a Kiln token shard (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise ShardError(
            f"{path}: shard format version {version}, this Kiln reads version {VERSION}"
        )
    if itemsize not in _DTYPES:
        raise ShardError(f"{path}: token size {itemsize} bytes; expected 2 (uint16) or 4 (uint32)")
    expected = HEADER_SIZE + count * itemsize
    if size != expected:
        raise ShardError(
            f"{path}: file is {size} bytes but its header promises {count} tokens × {itemsize} B "
            f"+ {HEADER_SIZE} B header = {expected} bytes (truncated or corrupt)"
        )
    return _DTYPES[itemsize], count


def open_shard(path: str | Path) -> np.ndarray:
    """Memory-map a validated shard's token ids (read-only)."""
    dtype, count = read_header(path)
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_SIZE, shape=(count,))


def verify_shard(
    path: str | Path,
    sha256: str,
    vocab_size: int,
    where: str = "the manifest",
    chunk: int = 1 << 24,
) -> None:
    """Check a shard against what its manifest says, in one streamed pass over the file.

    Checks the header and exact size (`read_header`), the sha256 of the whole file, and that
    every id is below `vocab_size` (vectorized per block: a stray id would otherwise fail deep
    inside the embedding lookup, or silently index padding rows).

    Raises:
        ShardError: naming the file and what is wrong.
    """
    path = Path(path)
    dtype, _ = read_header(path)
    digest = hashlib.sha256()
    bad: tuple[int, int] | None = None  # (position, id) of the first id out of range
    position = 0
    step = max(1, chunk // dtype.itemsize) * dtype.itemsize
    with open(path, "rb") as f:
        digest.update(f.read(HEADER_SIZE))
        while block := f.read(step):
            digest.update(block)
            ids = np.frombuffer(block, dtype=dtype)
            if bad is None and ids.size and int(ids.max()) >= vocab_size:
                at = int(np.argmax(ids >= vocab_size))
                bad = (position + at, int(ids[at]))
            position += ids.size
    got = digest.hexdigest()
    if got != sha256:
        raise ShardError(
            f"{path}: sha256 does not match {where} (file {got[:16]}…, expected {sha256[:16]}…): "
            "the shard was corrupted or replaced after `kiln tokenize`; re-run it"
        )
    if bad is not None:
        raise ShardError(
            f"{path}: token id {bad[1]} at position {bad[0]} is not below the vocabulary size "
            f"{vocab_size} of {where}: the shard does not match its tokenizer; re-run `kiln tokenize`"
        )


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
