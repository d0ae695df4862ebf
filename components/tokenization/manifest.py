"""`manifest.json`: what a tokenized dataset directory holds, with a checksum per shard.

Directory layout (the tokenize → pretrain contract):

    tokens/
      manifest.json      this file
      tokenizer.json     the tokenizer that produced the ids
      train/000000.bin   token shards (see shards.py), documents separated by eot_id
      val/000000.bin

`manifest.json`:

    {"format": "kiln-tokens", "version": 1, "vocab_size": 4096, "dtype": "uint16", "eot_id": 0,
     "tokenizer_sha256": "…", "dataset_digest": "…",
     "splits": {"train": [{"file": "train/000000.bin", "tokens": 123, "sha256": "…"}], "val": [...]}}

`verify_shards(paths)` is what a reader of shards calls before trusting them: each shard is
checked against the manifest of the directory it lies in (size, sha256, ids < vocab_size).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kiln.components.tokenization.shards import ShardError, read_header, verify_shard

FORMAT = "kiln-tokens"
VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class ShardEntry:
    file: str
    tokens: int
    sha256: str


@dataclass
class Manifest:
    vocab_size: int
    dtype: str
    eot_id: int
    splits: dict[str, list[ShardEntry]] = field(default_factory=dict)
    tokenizer_sha256: str = ""
    dataset_digest: str = ""
    extra: dict = field(default_factory=dict)

    def tokens(self, split: str) -> int:
        return sum(s.tokens for s in self.splits.get(split, []))

    def to_dict(self) -> dict:
        d = asdict(self)
        d = {"format": FORMAT, "version": VERSION, **d}
        return d


def write_manifest(directory: str | Path, manifest: Manifest) -> Path:
    """Write `manifest.json` atomically; it is written last, so its presence means complete."""
    path = Path(directory) / MANIFEST
    tmp = path.with_name(f".{MANIFEST}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(directory: str | Path, verify: bool = False) -> Manifest:
    """Load and check a tokenized dataset's manifest.

    Every listed shard must exist with a valid header and the listed token count; with
    `verify=True` its sha256 is recomputed and its ids checked against `vocab_size` too
    (reads every byte; see `verify_shard`).
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: {directory} is not a tokenized dataset (run `kiln tokenize` first)"
        )
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise ShardError(
            f"{path}: format {data.get('format')!r} v{data.get('version')}, expected {FORMAT!r} v{VERSION}"
        )
    splits = {
        name: [ShardEntry(**entry) for entry in entries] for name, entries in data["splits"].items()
    }
    manifest = Manifest(
        vocab_size=int(data["vocab_size"]),
        dtype=data["dtype"],
        eot_id=int(data["eot_id"]),
        splits=splits,
        tokenizer_sha256=data.get("tokenizer_sha256", ""),
        dataset_digest=data.get("dataset_digest", ""),
        extra=data.get("extra", {}),
    )
    for entries in splits.values():
        for entry in entries:
            shard = directory / entry.file
            dtype, count = read_header(shard)
            if count != entry.tokens or dtype.name != manifest.dtype:
                raise ShardError(
                    f"{shard}: header says {count} {dtype.name} tokens, manifest says "
                    f"{entry.tokens} {manifest.dtype}"
                )
            if verify:
                verify_shard(shard, entry.sha256, manifest.vocab_size, where=str(path))
    return manifest


def shard_paths(directory: str | Path, split: str) -> list[Path]:
    """Paths of a split's shards, in manifest order."""
    manifest = read_manifest(directory)
    if split not in manifest.splits or not manifest.splits[split]:
        raise ValueError(f"{directory}: manifest has no {split!r} shards")
    return [Path(directory) / e.file for e in manifest.splits[split]]


# Shards already verified by this process, keyed by what would change if the file did: a
# training process builds its loaders more than once (train, then val at every evaluation)
# and should read each shard's bytes for verification only once.
_verified: set[tuple] = set()


def verify_shards(paths: Iterable[str | Path]) -> None:
    """Verify token shards against the `manifest.json` of the tokens directory each lies in
    (`<dir>/<split>/NNNNNN.bin`): header and size, sha256, and every id < vocab_size.

    Each shard is read once per process (again only if its size or mtime changes).

    Raises:
        ShardError (a ValueError): naming the shard and what is wrong, including a shard with no
        manifest next to it or one its manifest does not list.
    """
    manifests: dict[Path, Manifest] = {}
    for shard in map(Path, paths):
        root = shard.parent.parent
        if root not in manifests:
            if not (root / MANIFEST).exists():
                raise ShardError(
                    f"{shard}: no {MANIFEST} in {root} to verify this shard against "
                    "(token shards come from `kiln tokenize`, which writes it last)"
                )
            manifests[root] = read_manifest(root)
        manifest = manifests[root]
        rel = f"{shard.parent.name}/{shard.name}"
        entry = next((e for es in manifest.splits.values() for e in es if e.file == rel), None)
        if entry is None:
            raise ShardError(f"{shard}: not listed in {root / MANIFEST}")
        st = shard.stat()
        key = (str(shard.resolve()), st.st_size, st.st_mtime_ns, entry.sha256, manifest.vocab_size)
        if key not in _verified:
            verify_shard(shard, entry.sha256, manifest.vocab_size, where=str(root / MANIFEST))
            _verified.add(key)
