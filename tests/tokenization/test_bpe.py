import random

import pytest

from kiln.components.tokenization.bpe import (
    EOT,
    iter_segments,
    load_tokenizer,
    special_tokens,
    train_bpe,
)
from kiln.components.tokenization.engine import Encoder, tiktoken_encoding

CORPUS = [
    "The quick brown fox jumps over the lazy dog. It was 12345 degrees outside!\n",
    "def main(argv):\n    return 42  # the answer\n\n\nclass Foo:\n    pass\n",
    "Ünïcödé têxt wïth àccents, 日本語のテキスト, and emoji 🚀🔥 mixed in.\r\n",
    "Numbers like 3.14159 and 2026-11-21 and 1,000,000 appear in prose too.",
] * 20


ANY_CODE_POINT = [c for c in range(0, 0x110000, 97) if not 0xD800 <= c < 0xE000]


def random_unicode(rng: random.Random, n: int) -> str:
    pools = [
        lambda: chr(rng.randrange(0x20, 0x7F)),
        lambda: chr(rng.randrange(0x0300, 0x0370)),  # combining marks
        lambda: chr(rng.randrange(0x1F300, 0x1FAFF)),  # emoji
        lambda: chr(rng.choice([0, 9, 10, 13, 0x200D, 0xFEFF, 0xFE0F])),  # NUL, ZWJ, BOM, VS16
        lambda: chr(rng.randrange(0x4E00, 0x9FFF)),
        lambda: chr(rng.choice(ANY_CODE_POINT)),
        lambda: " " * rng.randrange(1, 4),
        lambda: str(rng.randrange(10**6)),
    ]
    return "".join(rng.choice(pools)() for _ in range(n))


@pytest.fixture(scope="module")
def tok():
    return train_bpe(CORPUS, vocab_size=400, chat_tokens=4, min_frequency=1)


def test_special_tokens_take_the_first_ids(tok):
    assert special_tokens(4) == [EOT] + [f"<|reserved_{i}|>" for i in range(4)]
    for i, name in enumerate(special_tokens(4)):
        assert tok.token_to_id(name) == i
    assert tok.get_vocab_size() == 400


def test_round_trip_random_unicode_both_engines(tok):
    rng = random.Random(0)
    texts = [random_unicode(rng, rng.randrange(0, 400)) for _ in range(200)]
    texts += ["\x00", "e\u0301\u0302", "👩‍👩‍👧‍👦", "\ufeffBOM", "a<|endoftext|>b", ""]
    fast, hf = Encoder(tok, "tiktoken"), Encoder(tok, "hf")
    fast_ids, hf_ids = fast.encode_batch(texts), hf.encode_batch(texts)
    assert fast_ids == hf_ids
    for text, ids in zip(texts, hf_ids, strict=True):
        assert tok.decode(ids, skip_special_tokens=False) == text
    assert fast.verify(texts) == 0 and fast.engine == "tiktoken"


def test_digits_split_in_groups_of_three(tok):
    pieces = [p for p, _ in tok.pre_tokenizer.pre_tokenize_str("1234567")]
    assert pieces == ["123", "456", "7"]


def test_tiktoken_path_refused_for_other_models():
    from tokenizers import Tokenizer, models, pre_tokenizers

    wp = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.Whitespace()
    assert tiktoken_encoding(wp) is None
    with pytest.raises(ValueError, match="cannot run on tiktoken"):
        Encoder(wp, "tiktoken")


def test_verify_falls_back_on_mismatch(tok, monkeypatch):
    enc = Encoder(tok, "auto")
    assert enc.engine == "tiktoken"
    monkeypatch.setattr(enc, "reference", lambda texts: [[1] for _ in texts])
    assert enc.verify(["hello world"]) == 1
    assert enc.engine == "hf" and enc.fast is None


@pytest.mark.parametrize("text", [("word " * 5000), ("line\n" * 3000), ("x" * 9000)])
def test_segments_tokenize_like_the_whole(tok, text):
    pieces = list(iter_segments(text, 1000))
    assert "".join(pieces) == text
    assert max(len(p) for p in pieces) <= 4000
    enc = Encoder(tok, "hf")
    if text[0] != "x":  # a run without any cut point is cut blindly (documented)
        assert sum(enc.encode_batch(pieces), []) == enc.encode_batch([text])[0]


def test_load_tokenizer_errors(tmp_path, tok):
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid tokenizer.json"):
        load_tokenizer(tmp_path / "bad.json")
    tok.save(str(tmp_path / "ok.json"))
    assert load_tokenizer(tmp_path / "ok.json").get_vocab_size() == 400


def test_added_tokens_other_than_kiln_specials_match_tokenizers():
    tok = train_bpe(CORPUS, vocab_size=400, chat_tokens=1, min_frequency=1)
    tok.add_special_tokens(["</s>", "[INST]"])
    enc = Encoder(tok, "tiktoken")
    texts = ["a </s> b [INST] c <|endoftext|> d", "no specials here", "[INST]"]
    assert enc.encode_batch(texts) == enc.reference(texts)
    assert tok.token_to_id("[INST]") in enc.encode_batch(texts)[2]


def test_gpt2_style_tokenizer_json_runs_on_tiktoken_with_same_ids():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=350,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    enc = Encoder(tok, "auto")
    assert enc.engine == "tiktoken"
    rng = random.Random(1)
    texts = [random_unicode(rng, 300) for _ in range(100)] + CORPUS[:4]
    assert enc.encode_batch(texts) == enc.reference(texts)
