"""Byte-level BPE: train one with `tokenizers`, or load an existing `tokenizer.json`.

The trained tokenizer is GPT-4 style: a regex pre-tokenizer (contractions, letter runs, digit groups
of at most 3, punctuation runs, newline runs, other whitespace) followed by a byte-level alphabet of
all 256 bytes, so any Unicode string — emoji, combining marks, NUL — encodes and decodes losslessly.
Special tokens take the first ids: `<|endoftext|>` (id 0, the separator between documents) and
`<|reserved_0|>`… for chat fine-tuning.

    tok = train_bpe(texts, vocab_size=4096)
    tok.save("tokenizer.json")
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

EOT = "<|endoftext|>"
# cl100k-style split: digits in groups of ≤3, a space attaches to the following word, newlines
# are their own pieces. The same pattern drives the tiktoken fast path (engine.py).
PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def special_tokens(chat_tokens: int = 8) -> list[str]:
    """`<|endoftext|>` followed by `chat_tokens` reserved tokens for fine-tuning formats."""
    return [EOT] + [f"<|reserved_{i}|>" for i in range(chat_tokens)]


def new_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE with Kiln's pre-tokenizer and decoder."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    chat_tokens: int = 8,
    min_frequency: int = 2,
    length: int | None = None,
) -> Tokenizer:
    """Train a byte-level BPE on `texts` (streamed; feed long documents in pieces).

    Args:
        texts: training text, any iterable of strings.
        vocab_size: final vocabulary size, special tokens and the 256 bytes included.
        chat_tokens: number of reserved special tokens after `<|endoftext|>`.
        min_frequency: minimum pair count for a merge.
        length: number of items in `texts`, only for the progress display.
    """
    specials = special_tokens(chat_tokens)
    if vocab_size < 256 + len(specials):
        raise ValueError(
            f"tokenizer.vocab_size={vocab_size} is too small: need at least 256 byte tokens + "
            f"{len(specials)} special tokens"
        )
    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=length)
    return tok


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a `tokenizer.json` (Kiln's or e.g. a Hugging Face model's); it must define an EOT token."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises plain Exception on malformed JSON
        raise ValueError(f"{path}: not a valid tokenizer.json ({e})") from e
    eot_id(tok, where=str(path))
    return tok


_EOT_CANDIDATES = (EOT, "</s>", "<|end_of_text|>", "<eos>", "<|im_end|>")


def eot_id(tok: Tokenizer, where: str = "tokenizer") -> int:
    """Id of the end-of-text token that separates documents."""
    for name in _EOT_CANDIDATES:
        idx = tok.token_to_id(name)
        if idx is not None:
            return idx
    raise ValueError(
        f"{where}: has none of the end-of-text tokens {', '.join(_EOT_CANDIDATES)}; "
        "Kiln needs one to separate documents"
    )


def iter_segments(text: str, max_chars: int) -> Iterator[str]:
    """Cut a long text into pieces of about `max_chars` that tokenize exactly as the whole does.

    Cuts fall before a non-space character that follows a newline, or before a space that
    separates two letters: no pre-token of PATTERN spans such a point, so the concatenated ids
    equal the ids of the uncut text. Only a run of `4 * max_chars` without any such point is cut
    blindly (bounded memory wins over a token boundary there).
    """
    import regex

    if len(text) <= max_chars:
        yield text
        return
    cut = regex.compile(r"(?<=\n)(?=\S)|(?<=\p{L})(?= \p{L})")
    start = 0
    while len(text) - start > max_chars:
        lo, hi = start + max_chars // 2, start + max_chars
        last = None
        for m in cut.finditer(text, lo, hi):
            last = m.start()
        if last is None:
            m = cut.search(text, hi, start + 4 * max_chars)
            last = m.start() if m else start + 4 * max_chars
        if last >= len(text):
            break
        yield text[start:last]
        start = last
    yield text[start:]
