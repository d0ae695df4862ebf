"""Fast encoding: run the merges of a `tokenizer.json` on tiktoken's BPE core.

`tokenizers` is the reference (it trains and ships `tokenizer.json`); tiktoken encodes the same
byte-level BPE faster. The fast path is used only when it is provably the same function: the
tokenizer must be byte-level BPE with no normalizer, a known pre-tokenizer (Kiln's Split regex,
or GPT-2's ByteLevel regex), merge results whose ids grow in merge order (tiktoken merges the pair
whose result has the lowest rank), and the ids of both engines must agree on the documents
cross-checked in `Encoder.verify`. Otherwise `tokenizers` itself encodes.
"""

from __future__ import annotations

import json
import logging

from tokenizers import Tokenizer

log = logging.getLogger(__name__)

# GPT-2's pre-tokenizer regex, as used by tokenizers' ByteLevel(use_regex=True).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: the printable stand-in char of each byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def _pattern(spec: dict) -> str | None:
    """The split regex of a supported pre-tokenizer spec, else None."""
    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return None if pre.get("add_prefix_space") else GPT2_PATTERN
    if pre.get("type") != "Sequence":
        return None
    parts = pre.get("pretokenizers", [])
    if len(parts) != 2 or parts[0].get("type") != "Split" or parts[1].get("type") != "ByteLevel":
        return None
    split, byte_level = parts
    if split.get("behavior") != "Isolated" or split.get("invert") or byte_level.get("use_regex"):
        return None
    if byte_level.get("add_prefix_space"):
        return None
    return split.get("pattern", {}).get("Regex")


def tiktoken_encoding(tok: Tokenizer, name: str = "kiln"):
    """A `tiktoken.Encoding` computing the same ids as `tok`, or None where that is not provable."""
    try:
        import tiktoken
    except ImportError:
        return None
    spec = json.loads(tok.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE" or spec.get("normalizer") or model.get("dropout"):
        return None
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        return None
    pat = _pattern(spec)
    if pat is None:
        return None
    dec = byte_decoder()
    vocab: dict[str, int] = model["vocab"]
    try:
        ranks = {bytes(dec[c] for c in piece): idx for piece, idx in vocab.items()}
    except KeyError:
        return None  # a vocab entry outside the byte alphabet
    if len(ranks) != len(vocab) or any(bytes([b]) not in ranks for b in range(256)):
        return None
    last = -1
    for merge in model.get("merges", []):
        a, b = merge.split(" ", 1) if isinstance(merge, str) else merge
        idx = vocab.get(a + b)
        if idx is None or idx <= last:
            return None  # tiktoken's "lowest rank first" would merge in a different order
        last = idx
    specials = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
    ranks = {k: v for k, v in ranks.items() if v not in specials.values()}
    return tiktoken.Encoding(name, pat_str=pat, mergeable_ranks=ranks, special_tokens=specials)


class Encoder:
    """Batch encoder over one tokenizer, on tiktoken when proven equal, else on `tokenizers`."""

    def __init__(self, tok: Tokenizer, engine: str = "auto"):
        if engine not in {"auto", "tiktoken", "hf"}:
            raise ValueError(f"tokenizer.engine must be auto, tiktoken or hf, got {engine!r}")
        self.tok = tok
        self.fast = tiktoken_encoding(tok) if engine != "hf" else None
        if engine == "tiktoken" and self.fast is None:
            raise ValueError(
                "tokenizer.engine=tiktoken but this tokenizer.json cannot run on tiktoken "
                "(needs byte-level BPE, no normalizer, a supported pre-tokenizer)"
            )
        self.engine = "tiktoken" if self.fast is not None else "hf"
        # encode_ordinary skips the special-token scan, safe for a text that cannot contain one:
        # with Kiln's specials (all "<|…|>"), any text without "<|".
        specials = self.fast.special_tokens_set if self.fast is not None else set()
        self._marker = "<|" if specials and all(t.startswith("<|") for t in specials) else ""

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Ids of each text; special-token literals map to their ids, as in `tokenizers`."""
        if self.fast is not None:
            fast, marker = self.fast, self._marker
            if not marker:
                return [fast.encode(t, allowed_special="all") for t in texts]
            return [
                fast.encode(t, allowed_special="all") if marker in t else fast.encode_ordinary(t)
                for t in texts
            ]
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def reference(self, texts: list[str]) -> list[list[int]]:
        """Ids from `tokenizers` itself."""
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def verify(self, texts: list[str]) -> int:
        """Compare the fast engine with `tokenizers` on `texts`; fall back to hf on a mismatch.

        Returns the number of mismatching texts (0 when the engines agree or hf is used).
        """
        if self.fast is None or not texts:
            return 0
        bad = sum(
            a != b for a, b in zip(self.encode_batch(texts), self.reference(texts), strict=True)
        )
        if bad:
            log.warning("tiktoken ids differ from tokenizers on %d texts: using tokenizers", bad)
            self.fast, self.engine = None, "hf"
        return bad
