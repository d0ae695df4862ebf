"""Quality filters: each returns None (keep) or a drop reason, and can be disabled by name.

Defaults are the published thresholds:
- Gopher quality and repetition rules: Rae et al. 2021, "Scaling Language Models: Methods,
  Analysis & Insights from Training Gopher", appendix A.1.1 (50–100k words, mean word length
  3–10, ≤0.1 symbols per word, ≤90% bullet lines, ≤30% ellipsis lines, ≥80% words with a letter,
  ≥2 of the stop words the/be/to/of/and/that/have/with; duplicate lines ≤30% / their chars ≤20%,
  top 2/3/4-gram char share ≤0.20/0.18/0.16, duplicated 5…10-gram char share ≤0.15…0.10).
- C4: Raffel et al. 2020, "Exploring the Limits of Transfer Learning…", §2.2 (no "lorem ipsum",
  no curly bracket; lines of fewer than 3 words — off by default here, it removes code).
- FineWeb: Penedo et al. 2024, "The FineWeb Datasets", §3.3 custom filters (≤67% of lines
  shorter than 30 chars; newline ratio ≤0.3 as in datatrove's FineWebQualityFilter).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import numpy as np

from kiln.components.common.config import FilterConfig

STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
_HAS_ALPHA = re.compile(r"[^\W\d_]")  # a letter (any script)
BULLETS = ("•", "‣", "⁃", "◦", "-", "*", "·", "●", "▪")
Filter = Callable[[str, list[str], list[str]], str | None]


def length(c: FilterConfig) -> Filter:
    def check(text: str, words: list[str], lines: list[str]) -> str | None:
        if len(text) < c.min_chars:
            return "too_short"
        return "too_long" if len(text) > c.max_chars else None

    return check


def gopher_quality(c: FilterConfig) -> Filter:
    def check(text: str, words: list[str], lines: list[str]) -> str | None:
        n = len(words)
        if n < c.min_words:
            return "gopher_few_words"
        if n > c.max_words:
            return "gopher_many_words"
        mean = sum(map(len, words)) / n
        if not c.min_mean_word_len <= mean <= c.max_mean_word_len:
            return "gopher_mean_word_length"
        symbols = text.count("#") + text.count("...") + text.count("…")
        if symbols / n > c.max_symbol_word_ratio:
            return "gopher_symbol_ratio"
        nonempty = [ln for ln in lines if ln.strip()] or [""]
        if (
            sum(ln.lstrip().startswith(BULLETS) for ln in nonempty) / len(nonempty)
            > c.max_bullet_lines
        ):
            return "gopher_bullet_lines"
        ellipsis = sum(ln.rstrip().endswith(("...", "…")) for ln in nonempty)
        if ellipsis / len(nonempty) > c.max_ellipsis_lines:
            return "gopher_ellipsis_lines"
        if sum(map(bool, map(_HAS_ALPHA.search, words))) / n < c.min_alpha_words:
            return "gopher_alpha_words"
        return None

    return check


def stop_words(c: FilterConfig) -> Filter:
    def check(text: str, words: list[str], lines: list[str]) -> str | None:
        found = sum(map(STOP_WORDS.__contains__, map(str.lower, words)))
        return "gopher_stop_words" if found < c.min_stop_words else None

    return check


def _ngram_hashes(ids: np.ndarray, max_n: int) -> dict[int, np.ndarray]:
    """64-bit rolling hashes of every n-gram of word ids, n = 2..max_n (wrapping arithmetic)."""
    out, h = {}, ids.astype(np.uint64)
    with np.errstate(over="ignore"):
        for n in range(2, min(max_n, ids.size) + 1):
            h = h[:-1] * np.uint64(0x9E3779B97F4A7C15) + ids[n - 1 :].astype(np.uint64)
            out[n] = h
    return out


def gopher_repetition(c: FilterConfig) -> Filter:
    def check(text: str, words: list[str], lines: list[str]) -> str | None:
        nonempty = [ln for ln in lines if ln.strip()]
        if nonempty:
            counts = Counter(nonempty)
            dup = [ln for ln in nonempty if counts[ln] > 1]
            if len(dup) / len(nonempty) > c.max_dup_line_frac:
                return "gopher_dup_lines"
            if sum(map(len, dup)) / max(1, len(text)) > c.max_dup_line_char_frac:
                return "gopher_dup_line_chars"
        if len(words) < 2:
            return None
        vocab: dict[str, int] = {}
        ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in words), np.int64, len(words))
        lens = np.fromiter(map(len, words), np.int64, len(words))
        total = int(lens.sum()) or 1
        grams = _ngram_hashes(ids, 10)
        for n, limit in zip((2, 3, 4), c.max_top_ngram_frac, strict=False):
            if n not in grams:
                break
            _, first, inv, cnt = np.unique(grams[n], True, True, True)
            top = int(np.argmax(cnt))
            if cnt[top] > 1:
                start = int(first[top])
                if int(lens[start : start + n].sum()) * int(cnt[top]) / total > limit:
                    return f"gopher_top_{n}gram"
        for n, limit in zip(range(5, 11), c.max_dup_ngram_frac, strict=False):
            if n not in grams:
                break
            _, inv, cnt = np.unique(grams[n], return_inverse=True, return_counts=True)
            dup = (cnt[inv] > 1).astype(np.int32)
            if not dup.any():
                break  # no repeated n-gram means no repeated longer one either
            # a word counts once however many duplicated n-grams cover it (Gopher)
            covered = np.convolve(dup, np.ones(n, np.int32))[: len(words)] > 0
            if int(lens[covered].sum()) / total > limit:
                return f"gopher_dup_{n}gram"
        return None

    return check


def c4(c: FilterConfig) -> Filter:
    def check(text: str, words: list[str], lines: list[str]) -> str | None:
        if c.c4_bad_phrases:
            if "lorem ipsum" in text.lower():
                return "c4_lorem_ipsum"
            if "{" in text:
                return "c4_curly_bracket"
        if c.c4_min_line_words and any(0 < len(ln.split()) < c.c4_min_line_words for ln in lines):
            return "c4_short_line"
        return None

    return check


def fineweb(c: FilterConfig) -> Filter:
    def check(text: str, words: list[str], lines: list[str]) -> str | None:
        nonempty = [ln for ln in lines if ln.strip()] or [""]
        if sum(len(ln) < 30 for ln in nonempty) / len(nonempty) > c.max_short_line_frac:
            return "fineweb_short_lines"
        if text.count("\n") / max(1, len(words)) > c.max_newline_word_ratio:
            return "fineweb_newline_ratio"
        return None

    return check


REGISTRY = {  # in the order applied: cheapest first
    "length": length,
    "c4": c4,
    "fineweb": fineweb,
    "gopher_quality": gopher_quality,
    "stop_words": stop_words,
    "gopher_repetition": gopher_repetition,
}


def build(c: FilterConfig) -> list[tuple[str, Filter]]:
    """The enabled filters, cheapest first; unknown names in `disable` are an error."""
    unknown = set(c.disable) - set(REGISTRY)
    if unknown:
        raise ValueError(
            f"ingest.filters.disable: unknown filter(s) {sorted(unknown)}; known: {', '.join(REGISTRY)}"
        )
    return [(name, make(c)) for name, make in REGISTRY.items() if name not in c.disable]


def apply(filters: list[tuple[str, Filter]], text: str) -> str | None:
    """First drop reason of `filters` for `text`, or None to keep it."""
    words = text.split()
    lines = text.split("\n")
    for _, check in filters:
        reason = check(text, words, lines)
        if reason:
            return reason
    return None
