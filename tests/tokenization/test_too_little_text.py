"""`tokenize` refuses a corpus too small for the vocabulary it is asked for, and says why."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kiln.components.common.config import TokenizerConfig
from kiln.components.tokenization import tokenize
from kiln.components.tokenization.bpe import train_bpe


def dataset(root, train_texts, val_texts=("held out text",)):
    for split, texts in (("train", train_texts), ("val", val_texts)):
        (root / split).mkdir(parents=True)
        table = pa.table({"id": [f"{split}{i}" for i in range(len(texts))], "text": list(texts)})
        pq.write_table(table, root / split / "00000.parquet")
    return root


def test_empty_dataset_is_an_error(tmp_path):
    data = dataset(tmp_path / "d", [])
    with pytest.raises(ValueError, match="holds no text to train on: its train split is empty"):
        tokenize(data, tmp_path / "out", TokenizerConfig(workers=1))
    blank = dataset(tmp_path / "blank", ["   \n\t", ""])
    with pytest.raises(ValueError, match="holds no text to train on"):
        tokenize(blank, tmp_path / "out", TokenizerConfig(workers=1))
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_empty_dataset_is_an_error_with_a_given_tokenizer_too(tmp_path):
    tok = train_bpe(["some words to learn a few merges from, words words"] * 5, 300, 1, 1)
    tok.save(str(tmp_path / "tokenizer.json"))
    data = dataset(tmp_path / "d", [])
    with pytest.raises(ValueError, match="holds no text to train on"):
        tokenize(data, tmp_path / "out", TokenizerConfig(workers=1), tmp_path / "tokenizer.json")


def test_one_line_dataset_is_refused_naming_sizes_and_the_fix(tmp_path):
    data = dataset(tmp_path / "d", ["Kiln pretrains small language models."])
    with pytest.raises(ValueError) as err:
        tokenize(data, tmp_path / "out", TokenizerConfig(workers=1))
    msg = str(err.value)
    assert "bytes of training text, for tokenizer.vocab_size=4096 (3831 merges)" in msg
    assert "far too little text for this vocabulary" in msg
    assert "Give it more text" in msg and "smaller tokenizer.vocab_size" in msg
    one_word = dataset(tmp_path / "w", ["word"])
    with pytest.raises(ValueError, match=r"learned 0 merges \(vocabulary 265 ids\)"):
        tokenize(one_word, tmp_path / "out", TokenizerConfig(workers=1))
    plain = tmp_path / "one.txt"
    plain.write_text("A single line of text.\n")
    with pytest.raises(ValueError, match="far too little text"):
        tokenize(plain, tmp_path / "out", TokenizerConfig(workers=1))


def test_a_vocabulary_well_short_of_the_request_is_a_loud_warning(tmp_path, capsys):
    text = " ".join(f"token{i % 40} alpha beta gamma" for i in range(400))
    data = dataset(tmp_path / "d", [text] * 3, [text[:200]])
    manifest = tokenize(data, tmp_path / "out", TokenizerConfig(workers=1, vocab_size=2048))
    assert manifest.vocab_size < 1024 and manifest.extra["vocab_requested"] == 2048
    out = capsys.readouterr().out
    assert "tokenize: WARNING: the tokenizer learned" in out
    assert "more text would give a better tokenizer" in out
