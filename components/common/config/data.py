"""Config sections of the data stages: ingest (with its filters and dedup) and tokenization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kiln.components.common.config.fields import Section, fail, section, setting

BYTE_TOKENS = 256  # a byte-level BPE holds every byte as a token


@dataclass
class TokenizerConfig(Section):
    """BPE tokenizer training and encoding into token shards (`kiln tokenize`)."""

    KEY = "tokenizer"

    vocab_size: int = setting(
        4096, "Vocabulary size of a trained tokenizer (special tokens included).", ge=1
    )
    min_frequency: int = setting(2, "A pair must occur this often to become a merge.", ge=1)
    chat_tokens: int = setting(
        8,
        "Reserved special tokens <|reserved_0|>… added after <|endoftext|> for fine-tuning.",
        ge=0,
    )
    max_train_bytes: int = setting(
        1 << 30, "Train the BPE on at most this many bytes of the train split (0 = all).", ge=0
    )
    workers: int = setting(2, "Encoding processes.", ge=1)
    engine: Literal["auto", "tiktoken", "hf"] = setting(
        "auto",
        "Encoder: auto (tiktoken from the same merges when it reproduces tokenizers' ids, else "
        "hf) | tiktoken | hf.",
    )
    verify_docs: int = setting(
        256, "Documents per split cross-checked between the fast engine and tokenizers.", ge=0
    )
    shard_tokens: int = setting(100_000_000, "Most tokens per output shard.", ge=1)
    segment_chars: int = setting(
        1 << 20, "Long documents are encoded in pieces of about this many characters.", ge=1
    )

    def check(self) -> None:
        least = BYTE_TOKENS + 1 + self.chat_tokens  # bytes, <|endoftext|>, reserved tokens
        if self.vocab_size < least:
            fail(
                "tokenizer.vocab_size",
                f">= {least} (too small for {BYTE_TOKENS} byte tokens + <|endoftext|> + "
                f"tokenizer.chat_tokens={self.chat_tokens})",
                self.vocab_size,
            )


@dataclass
class FilterConfig(Section):
    """Quality heuristics (Gopher, C4, FineWeb); see components/ingest/filters.py for sources."""

    KEY = "ingest.filters"

    disable: list[str] = setting(
        [], 'Names of filters to switch off, e.g. ["stop_words", "c4_lines"].'
    )
    min_chars: int = setting(50, "Drop documents shorter than this (characters).", ge=0)
    max_chars: int = setting(10_000_000, "Drop documents longer than this (characters).", ge=1)
    min_words: int = setting(50, "Gopher: minimum number of words.", ge=0)
    max_words: int = setting(100_000, "Gopher: maximum number of words.", ge=1)
    min_mean_word_len: float = setting(3.0, "Gopher: minimum mean word length.", ge=0)
    max_mean_word_len: float = setting(10.0, "Gopher: maximum mean word length.", gt=0)
    max_symbol_word_ratio: float = setting(0.1, "Gopher: max ('#' + '...') per word.", ge=0)
    max_ellipsis_lines: float = setting(
        0.3, "Gopher: max fraction of lines ending with an ellipsis.", ge=0, le=1
    )
    max_bullet_lines: float = setting(
        0.9, "Gopher: max fraction of lines starting with a bullet.", ge=0, le=1
    )
    min_alpha_words: float = setting(
        0.8, "Gopher: min fraction of words with an alphabetic character.", ge=0, le=1
    )
    min_stop_words: int = setting(
        2, "Gopher: min count of English stop words (the, be, to, …).", ge=0
    )
    max_dup_line_frac: float = setting(0.3, "Gopher: max fraction of duplicate lines.", ge=0, le=1)
    max_dup_line_char_frac: float = setting(
        0.2, "Gopher: max fraction of characters in duplicate lines.", ge=0, le=1
    )
    max_top_ngram_frac: list[float] = setting(
        [0.2, 0.18, 0.16],
        "Gopher: max char fraction of the most common 2-, 3-, 4-gram.",
        ge=0,
        le=1,
    )
    max_dup_ngram_frac: list[float] = setting(
        [0.15, 0.14, 0.13, 0.12, 0.11, 0.10],
        "Gopher: max char fraction in duplicated 5- to 10-grams.",
        ge=0,
        le=1,
    )
    c4_min_line_words: int = setting(
        0, "C4: drop lines with fewer words (0 = off; C4 used 3, drops code-like text).", ge=0
    )
    c4_bad_phrases: bool = setting(
        True, "C4: drop documents with 'lorem ipsum' or a '{' curly bracket."
    )
    max_short_line_frac: float = setting(
        0.67, "FineWeb: max fraction of lines shorter than 30 characters.", ge=0, le=1
    )
    max_newline_word_ratio: float = setting(0.3, "FineWeb: max newlines per word.", ge=0)

    def check(self) -> None:
        for low, high in [
            ("min_chars", "max_chars"),
            ("min_words", "max_words"),
            ("min_mean_word_len", "max_mean_word_len"),
        ]:
            if getattr(self, low) > getattr(self, high):
                fail(
                    self.key(low), f"<= {self.key(high)}={getattr(self, high)}", getattr(self, low)
                )
        for name, n in [("max_top_ngram_frac", 3), ("max_dup_ngram_frac", 6)]:
            if len(getattr(self, name)) > n:
                fail(self.key(name), f"at most {n} fractions", getattr(self, name))


@dataclass
class DedupConfig(Section):
    """Exact and MinHash-LSH near-duplicate removal (global across workers)."""

    KEY = "ingest.dedup"

    exact: bool = setting(True, "Drop documents whose normalized text was already seen.")
    near: bool = setting(True, "Drop near duplicates found by MinHash LSH.")
    shingle: int = setting(5, "Words per shingle for MinHash.", ge=1)
    bands: int = setting(14, "LSH bands.", ge=1)
    rows: int = setting(8, "Hashes per band (bands × rows MinHash permutations).", ge=1)
    threshold: float = setting(
        0.8,
        "Candidates sharing a band are duplicates if estimated Jaccard ≥ this (0 = any).",
        ge=0,
        le=1,
    )
    seed: int = setting(42, "Seed of the MinHash permutations.", ge=0)


@dataclass
class IngestConfig(Section):
    """Raw text → cleaned, filtered, deduplicated train/val parquet (`kiln ingest`)."""

    KEY = "ingest"

    text_field: str = setting("text", "Field (jsonl/json) or column (parquet) holding the text.")
    id_field: str = setting(
        "id", "Field holding a document id; missing ids are derived from file+line."
    )
    workers: int = setting(
        2, "Reader/filter processes (dedup and writing stay global and ordered).", ge=1
    )
    ray_address: str = setting(
        "", "Run the per-file steps as Ray tasks: '' = local processes, 'local' | 'auto' | ray://…"
    )
    on_bad_utf8: Literal["replace", "skip"] = setting(
        "replace", "Non-UTF-8 bytes: replace (U+FFFD, counted) | skip (drop the line, counted)."
    )
    max_line_bytes: int = setting(
        64 << 20, "Longer lines/records are rejected (streamed, never held in memory).", ge=1
    )
    max_file_bytes: int = setting(
        16 << 30, "Stop a file after this many decompressed bytes (compression-bomb guard).", ge=1
    )
    val_fraction: float = setting(
        0.01, "Fraction of documents (by hash of id) for validation.", ge=0, lt=1
    )
    split_seed: int = setting(
        0, "Salt of the train/val hash; change it to draw another split.", ge=0
    )
    shard_bytes: int = setting(128 << 20, "Most text bytes per parquet shard.", ge=1)
    languages: list[str] = setting(
        [], 'Keep only these languages (ISO 639-1, e.g. ["en"]); [] = all.'
    )
    min_lang_score: float = setting(
        0.65, "Minimum language-id probability to keep a document.", ge=0, le=1
    )
    redact_pii: bool = setting(True, "Replace e-mails, phone numbers and IP addresses (counted).")
    source_weights: dict[str, float] = setting(
        {}, 'Per-source sampling weight, e.g. {"web": 0.5, "books": 2.0} (default 1).', ge=0
    )
    rejects_examples: int = setting(3, "Dropped examples kept per reason in stats.json.", ge=0)
    filters: FilterConfig = section(FilterConfig)
    dedup: DedupConfig = section(DedupConfig)

    def check(self) -> None:
        if not self.text_field:
            fail("ingest.text_field", "a field name", self.text_field)
        if not self.id_field:
            fail("ingest.id_field", "a field name", self.id_field)
