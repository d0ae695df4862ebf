"""Exact and near-duplicate detection.

Workers compute per document (in parallel) an exact key (blake2b-128 of the normalized text) and
a MinHash signature over word shingles; the parent feeds them, in input order, to one `Deduper`,
so duplicates are found across all workers and the first occurrence is the one kept.

MinHash: each word is hashed with crc32; a shingle of `k` words is a polynomial combination of
its word hashes, finalized with murmur3's mixer; signature[i] = min over shingles of
(a_i·h + b_i) mod (2^61-1).
LSH: the signature is cut into `bands` × `rows`; documents sharing a band's hash are candidates,
confirmed when their estimated Jaccard similarity is ≥ `threshold` (Broder 1997; Leskovec et al.,
Mining of Massive Datasets, ch. 3). Memory: 16 B exact key + bands × 8 B + the signature per kept
document.
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np

from kiln.components.common.config import DedupConfig

_P = np.uint64((1 << 61) - 1)


def exact_key(text: str) -> bytes:
    """128-bit hash of the normalized text."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class MinHasher:
    """MinHash signatures with `bands * rows` seeded permutations."""

    def __init__(self, cfg: DedupConfig):
        self.k, self.bands, self.rows = cfg.shingle, cfg.bands, cfg.rows
        rng = np.random.default_rng(cfg.seed)
        n = cfg.bands * cfg.rows
        self.a = rng.integers(1, (1 << 61) - 1, size=n, dtype=np.uint64)
        self.b = rng.integers(0, (1 << 61) - 1, size=n, dtype=np.uint64)

    def shingle_hashes(self, text: str) -> np.ndarray:
        """Distinct 32-bit hashes of the text's `k`-word shingles (lower-cased)."""
        words = text.lower().split()
        if not words:
            return np.zeros(1, dtype=np.uint64)
        wh = np.fromiter(
            (zlib.crc32(w.encode("utf-8", "surrogatepass")) for w in words), np.uint64, len(words)
        )
        k = min(self.k, len(words))
        n = len(words) - k + 1
        h = np.zeros(n, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(k):  # polynomial in the word hashes, wrapping mod 2^64
                h = h * np.uint64(0x100000001B3) + wh[j : j + n]
            h ^= h >> np.uint64(33)  # murmur3 finalizer: spread every word into the top bits
            h *= np.uint64(0xFF51AFD7ED558CCD)
            h ^= h >> np.uint64(33)
        return np.unique(h >> np.uint64(32))

    def signature(self, text: str) -> np.ndarray:
        """uint32 signature of bands × rows minima."""
        h = self.shingle_hashes(text)
        with np.errstate(over="ignore"):  # a·h + b wraps mod 2^64 before mod P (as datasketch)
            vals = (np.outer(h, self.a) + self.b) % _P
        return (vals.min(axis=0) & np.uint64(0xFFFFFFFF)).astype(np.uint32)

    def band_keys(self, sig: np.ndarray) -> list[bytes]:
        """One key per band: the band index and its rows."""
        r = self.rows
        return [bytes([i]) + sig[i * r : (i + 1) * r].tobytes() for i in range(self.bands)]


class Deduper:
    """Global, order-dependent duplicate index (lives in the parent process)."""

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg
        self.exact: set[bytes] = set()
        self.bands: dict[bytes, int] = {}
        self.sigs: list[np.ndarray] = []

    def check(self, key: bytes, sig: np.ndarray | None, band_keys: list[bytes]) -> str | None:
        """'exact' or 'near' if a duplicate of an earlier document, else None (and remember it)."""
        if self.cfg.exact:
            if key in self.exact:
                return "exact"
        if self.cfg.near and sig is not None:
            for bk in band_keys:
                other = self.bands.get(bk)
                if other is None:
                    continue
                if (
                    self.cfg.threshold <= 0
                    or np.mean(self.sigs[other] == sig) >= self.cfg.threshold
                ):
                    return "near"
        if self.cfg.exact:
            self.exact.add(key)
        if self.cfg.near and sig is not None:
            idx = len(self.sigs)
            self.sigs.append(sig)
            for bk in band_keys:
                self.bands.setdefault(bk, idx)
        return None
