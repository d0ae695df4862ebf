"""`tokenize`: dataset directory (or plain text) → tokenizer.json + token shards + manifest.

    from kiln.components.tokenization import tokenize
    manifest = tokenize("data/clean", "data/tokens", TokenizerConfig(vocab_size=8192))

Steps: train a BPE on the train split (or load `tokenizer_json`), cross-check the fast engine
against `tokenizers` on a sample, encode each split in `cfg.workers` processes (one parquet row
group per task, results consumed in order, so the output is byte-identical run to run), write
shards of at most `cfg.shard_tokens` ids with an end-of-text id before every document, and write
`manifest.json` last. An empty train split, or one too small to learn merges for
`cfg.vocab_size`, is a ValueError that says so (`check_vocabulary`).
"""

from __future__ import annotations

import itertools
import logging
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from kiln.components.common.config import TokenizerConfig
from kiln.components.common.config.data import BYTE_TOKENS
from kiln.components.common.parallel import OrderedPool
from kiln.components.common.progress import Progress
from kiln.components.tokenization import sources
from kiln.components.tokenization.bpe import eot_id, iter_segments, load_tokenizer, train_bpe
from kiln.components.tokenization.engine import Encoder
from kiln.components.tokenization.manifest import MANIFEST, Manifest, ShardEntry, write_manifest
from kiln.components.tokenization.shards import dtype_for_vocab, sha256_file, write_shard

log = logging.getLogger(__name__)


class DocEncoder:
    """What an encoding process holds: the tokenizer, its EOT id and dtype, an Encoder per engine."""

    def __init__(self, tokenizer_json: str, segment_chars: int):
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_str(tokenizer_json)
        self.eot = eot_id(self.tok)
        self.segment_chars = segment_chars
        self.dtype = dtype_for_vocab(self.tok.get_vocab_size(with_added_tokens=True))
        self.encoders: dict[str, Encoder] = {}

    def encoder(self, engine: str) -> Encoder:
        # The engine arrives with each task: the parent settles it (verify) while workers start.
        if engine not in self.encoders:
            self.encoders[engine] = Encoder(self.tok, engine)
        return self.encoders[engine]

    def encode(self, docs: Iterable[tuple[str, bool]], engine: str) -> tuple[np.ndarray, int]:
        """Ids of (text, ends_document) pieces, EOT before each document's first piece; bytes."""
        texts, starts, nbytes, new_doc = [], [], 0, True
        for text, ends in docs:
            for i, piece in enumerate(iter_segments(text, self.segment_chars)):
                texts.append(piece)
                starts.append(new_doc and i == 0)
            nbytes += len(text.encode("utf-8", "surrogatepass"))
            new_doc = ends
        ids = self.encoder(engine).encode_batch(texts)
        parts = []
        for first, row in zip(starts, ids, strict=True):
            if first:
                parts.append(np.array([self.eot], dtype=self.dtype))
            parts.append(np.asarray(row, dtype=self.dtype))
        return (np.concatenate(parts) if parts else np.zeros(0, self.dtype)), nbytes


# This process's DocEncoder. The tokenizer is too large to ship with every task, so the pool's
# initializer builds it once per worker process and the task functions find it here.
_doc_encoder: DocEncoder | None = None


def _init_worker(tokenizer_json: str, segment_chars: int) -> None:
    global _doc_encoder
    _doc_encoder = DocEncoder(tokenizer_json, segment_chars)


def _encode_unit(task: tuple[tuple[str, int], str]) -> tuple[np.ndarray, int]:
    unit, engine = task
    return _doc_encoder.encode(((t, True) for t in sources.read_unit(unit)), engine)


def _encode_batch(task: tuple[list[tuple[str, bool]], str]) -> tuple[np.ndarray, int]:
    docs, engine = task
    return _doc_encoder.encode(docs, engine)


class _ShardWriter:
    """Cuts a stream of id arrays into shards of exactly `limit` ids (the last one shorter)."""

    def __init__(self, out: Path, split: str, limit: int, vocab_size: int):
        self.dir, self.split, self.limit, self.vocab = out / split, split, limit, vocab_size
        self.dir.mkdir(parents=True, exist_ok=True)
        self.buf: list[np.ndarray] = []
        self.n = 0
        self.entries: list[ShardEntry] = []

    def add(self, ids: np.ndarray) -> None:
        while ids.size:
            take = min(ids.size, self.limit - self.n)
            self.buf.append(ids[:take])
            self.n += take
            ids = ids[take:]
            if self.n == self.limit:
                self.flush()

    def flush(self) -> None:
        if not self.n and self.entries:
            return
        name = f"{self.split}/{len(self.entries):06d}.bin"
        tokens = np.concatenate(self.buf) if self.buf else np.zeros(0, np.uint16)
        digest = write_shard(self.dir.parent / name, tokens, vocab_size=self.vocab)
        self.entries.append(ShardEntry(file=name, tokens=int(tokens.size), sha256=digest))
        self.buf, self.n = [], 0


class TrainingText:
    """The text a tokenizer is trained on: the train split (or plain text), in pieces, at most
    `tokenizer.max_train_bytes`; counts the bytes it fed and whether any was not blank."""

    def __init__(self, dataset: Path, cfg: TokenizerConfig):
        self.dataset, self.cfg = dataset, cfg
        self.bytes = 0
        self.has_text = False

    def __iter__(self) -> Iterator[str]:
        cfg = self.cfg
        if sources.is_dataset_dir(self.dataset):
            texts: Iterable[str] = sources.iter_texts(self.dataset, "train")
        else:
            texts = (t for s, t, _ in sources.iter_text_pieces(self.dataset, cfg.segment_chars))
        budget = cfg.max_train_bytes or float("inf")
        for text in texts:
            for piece in iter_segments(text, cfg.segment_chars):
                if budget <= 0:
                    return
                n = len(piece.encode("utf-8", "surrogatepass"))
                budget -= n
                self.bytes += n
                self.has_text = self.has_text or bool(piece.strip())
                yield piece

    def require_text(self) -> None:
        """Raise unless the train split holds some non-blank text (reads up to the first)."""
        if not self.has_text:
            any(piece.strip() for piece in self)
        if not self.has_text:
            raise ValueError(
                f"tokenize: {self.dataset} holds no text to train on: its train split is empty "
                "or blank. Check the ingest summary or stats.json (kept documents per split), or "
                "give --dataset a directory of non-empty .txt/.md files"
            )


def check_vocabulary(tok: Tokenizer, cfg: TokenizerConfig, fed: TrainingText) -> str:
    """Refuse a trained tokenizer that learned (almost) nothing; a warning if it fell short.

    A byte-level BPE holds 256 bytes and the special tokens before it learns any merge. Fewer
    merges than 1% of those asked for (at least one) means the text was far too small: such a
    tokenizer encodes nearly every byte as its own token. Half or less returns a warning line
    (printed with the summary); otherwise "".
    """
    base = BYTE_TOKENS + 1 + cfg.chat_tokens
    vocab = tok.get_vocab_size(with_added_tokens=True)
    merges, wanted = vocab - base, cfg.vocab_size - base
    said = (
        f"the tokenizer learned {merges} merges (vocabulary {vocab} ids) from {fed.bytes:,} "
        f"bytes of training text, for tokenizer.vocab_size={cfg.vocab_size} ({wanted} merges)"
    )
    if merges < max(1, wanted // 100):
        smaller = f", e.g. --set tokenizer.vocab_size={vocab}" if merges else " (none is learnable)"
        raise ValueError(
            f"tokenize: {said}: far too little text for this vocabulary. Give it more text (a "
            f"larger train split), or ask for a smaller tokenizer.vocab_size{smaller}"
        )
    if merges * 2 <= wanted:
        return f"WARNING: {said}: more text would give a better tokenizer"
    return ""


def _sample(dataset: Path, split: str, n: int, cfg: TokenizerConfig, max_chars: int = 1 << 18):
    """The first `n` documents of a split (at most ~`max_chars` in all) for the engine check."""
    if sources.is_dataset_dir(dataset):
        texts: Iterable[str] = sources.iter_texts(dataset, split)
    else:
        texts = (
            t for s, t, _ in sources.iter_text_pieces(dataset, cfg.segment_chars) if s == split
        )
    out, size = [], 0
    for text in itertools.islice(texts, n):
        out.append(text[: max_chars - size])
        size += len(out[-1])
        if size >= max_chars:
            break
    return out


def tokenize(
    dataset_dir: str | Path,
    output_dir: str | Path,
    cfg: TokenizerConfig | None = None,
    tokenizer_json: str | Path | None = None,
) -> Manifest:
    """Tokenize an ingest dataset (or .txt file/directory) into verified token shards.

    Args:
        dataset_dir: `kiln ingest` output (train/ and val/ parquet), a .txt file or a directory of .txt.
        output_dir: receives tokenizer.json, train/*.bin, val/*.bin and, last, manifest.json.
        cfg: tokenizer section of the Kiln config (defaults if None).
        tokenizer_json: use this tokenizer instead of training one.

    Returns:
        The written manifest.
    """
    cfg = cfg or TokenizerConfig()
    dataset, out = Path(dataset_dir), Path(output_dir)
    if not dataset.exists():
        raise FileNotFoundError(f"--dataset {dataset} does not exist")
    if cfg.workers < 1 or cfg.shard_tokens < 1 or cfg.segment_chars < 64:
        raise ValueError("tokenizer.workers, shard_tokens must be >= 1 and segment_chars >= 64")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # no manifest = incomplete, until we finish
    for split in sources.SPLITS:
        shutil.rmtree(out / split, ignore_errors=True)
    t0 = time.time()
    fed, warning = TrainingText(dataset, cfg), ""
    if tokenizer_json:
        fed.require_text()
        tok = load_tokenizer(tokenizer_json)
    else:
        tok = train_bpe(fed, cfg.vocab_size, cfg.chat_tokens, cfg.min_frequency)
        fed.require_text()
        warning = check_vocabulary(tok, cfg, fed)
    tok.save(str(out / "tokenizer.json"))
    train_s = time.time() - t0
    vocab, eot = tok.get_vocab_size(with_added_tokens=True), eot_id(tok)

    splits: dict[str, list[ShardEntry]] = {}
    totals = {"bytes": 0, "tokens": 0}
    t1 = time.time()
    init = (tok.to_str(), cfg.segment_chars)
    with OrderedPool(cfg.workers, initializer=_init_worker, initargs=init) as pool:
        pool.warm_up()  # workers start in the background while the engines are cross-checked
        encoder = Encoder(tok, cfg.engine)
        for split in sources.SPLITS:
            encoder.verify(_sample(dataset, split, cfg.verify_docs, cfg))
        log.info("tokenizer: vocab %d, eot id %d, engine %s", vocab, eot, encoder.engine)
        for split in sources.SPLITS:
            writer = _ShardWriter(out, split, cfg.shard_tokens, vocab)
            progress = Progress(f"tokenize {split}")
            if sources.is_dataset_dir(dataset):
                tasks = [(u, encoder.engine) for u in sources.units(dataset, split)]
                results = pool.map(_encode_unit, tasks)
            else:
                batches = _text_batches(dataset, split, cfg.segment_chars)
                results = pool.map(_encode_batch, ((b, encoder.engine) for b in batches))
            for ids, nbytes in results:
                writer.add(ids)
                progress.update(nbytes, ids.size)
            writer.flush()
            progress.close()
            splits[split] = writer.entries
            totals["bytes"] += progress.bytes
            totals["tokens"] += progress.tokens
    encode_s = time.time() - t1
    manifest = Manifest(
        vocab_size=vocab,
        dtype=dtype_for_vocab(vocab).name,
        eot_id=eot,
        splits=splits,
        tokenizer_sha256=sha256_file(out / "tokenizer.json"),
        dataset_digest=sources.digest(dataset),
        extra={
            "engine": encoder.engine,
            "trained": not tokenizer_json,
            "vocab_requested": None if tokenizer_json else cfg.vocab_size,
            "text_bytes": totals["bytes"],
            "bytes_per_token": round(totals["bytes"] / max(1, totals["tokens"]), 4),
            "encode_seconds": round(encode_s, 3),
        },
    )
    write_manifest(out, manifest)
    mb = totals["bytes"] / 1e6
    print(
        f"tokenized {mb:.1f} MB → {totals['tokens']:,} tokens "
        f"(train {manifest.tokens('train'):,}, val {manifest.tokens('val'):,}), "
        f"{manifest.extra['bytes_per_token']} bytes/token, engine {encoder.engine}, "
        f"encode {encode_s:.1f}s ({mb / max(encode_s, 1e-9):.1f} MB/s), tokenizer {train_s:.1f}s"
    )
    if warning:
        print(f"tokenize: {warning}")
    return manifest


def _text_batches(dataset: Path, split: str, piece_chars: int) -> Iterator[list[tuple[str, bool]]]:
    batch: list[tuple[str, bool]] = []
    size = 0
    for s, text, ends in sources.iter_text_pieces(dataset, piece_chars):
        if s != split:
            continue
        batch.append((text, ends))
        size += len(text)
        if size >= piece_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch
