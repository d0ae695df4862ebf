import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kiln.components.common.config import TokenizerConfig
from kiln.components.tokenization import tokenize
from kiln.components.tokenization.bpe import load_tokenizer
from kiln.components.tokenization.manifest import read_manifest, shard_paths
from kiln.components.tokenization.shards import ShardError, open_shard
from kiln.pipelines.cli import main

WORDS = "alpha beta gamma delta the of and to in is 42 1999 café naïve 🚀 x=1; def f():".split()


def make_dataset(root, n_train=120, n_val=12, seed=0):
    rng = np.random.default_rng(seed)
    docs = {}
    for split, n in (("train", n_train), ("val", n_val)):
        texts = [" ".join(rng.choice(WORDS, size=rng.integers(5, 60))) for _ in range(n)]
        texts[0] = "line one\r\nline two\n\n\ttabbed \x00 nul e\u0301"
        (root / split).mkdir(parents=True)
        for part in range(2):
            chunk = texts[part::2]
            table = pa.table(
                {
                    "id": [f"{split}-{part}-{i}" for i in range(len(chunk))],
                    "text": chunk,
                    "source": ["test"] * len(chunk),
                }
            )
            pq.write_table(table, root / split / f"{part:05d}.parquet", row_group_size=16)
        docs[split] = [t for part in range(2) for t in texts[part::2]]
    (root / "stats.json").write_text("{}")
    return docs


def docs_from_shards(out, split, tok, eot):
    ids = np.concatenate([np.asarray(open_shard(p)) for p in shard_paths(out, split)])
    assert ids[0] == eot
    cuts = np.flatnonzero(ids == eot).tolist() + [ids.size]
    return [
        tok.decode(ids[a + 1 : b].tolist(), skip_special_tokens=False)
        for a, b in zip(cuts[:-1], cuts[1:], strict=True)
    ]


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    docs = make_dataset(root / "data")
    cfg = TokenizerConfig(vocab_size=300, chat_tokens=2, shard_tokens=700, min_frequency=1)
    manifest = tokenize(root / "data", root / "out", cfg)
    return root, docs, cfg, manifest


def test_manifest_shards_and_round_trip(tokenized):
    root, docs, cfg, manifest = tokenized
    out = root / "out"
    m = read_manifest(out, verify=True)
    assert m.vocab_size == 300 and m.dtype == "uint16" and m.eot_id == 0
    assert m.extra["engine"] == "tiktoken" and m.tokenizer_sha256 and m.dataset_digest
    assert len(m.splits["train"]) > 2
    assert all(e.tokens == 700 for e in m.splits["train"][:-1])
    assert 0 < m.splits["train"][-1].tokens <= 700
    tok = load_tokenizer(out / "tokenizer.json")
    for split in ("train", "val"):
        assert docs_from_shards(out, split, tok, m.eot_id) == docs[split]


def test_same_input_gives_byte_identical_shards(tokenized, tmp_path):
    root, _, cfg, manifest = tokenized
    again = tokenize(root / "data", tmp_path / "again", cfg)
    assert again.splits == manifest.splits
    assert again.tokenizer_sha256 == manifest.tokenizer_sha256
    one = tokenize(
        root / "data",
        tmp_path / "one",
        TokenizerConfig(workers=1, engine="hf", shard_tokens=700),
        tokenizer_json=root / "out" / "tokenizer.json",
    )
    assert one.splits == manifest.splits and one.extra["trained"] is False


def test_checksums_are_verified_on_read(tokenized, tmp_path):
    root, _, cfg, _ = tokenized
    out = tmp_path / "copy"
    tokenize(root / "data", out, cfg, tokenizer_json=root / "out" / "tokenizer.json")
    shard = shard_paths(out, "train")[1]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    shard.write_bytes(bytes(data))
    read_manifest(out)  # header and size still fine
    with pytest.raises(ShardError, match="sha256 does not match"):
        read_manifest(out, verify=True)


def test_plain_text_input_and_cli(tmp_path, capsys):
    (tmp_path / "txt").mkdir()
    for i in range(3):
        (tmp_path / "txt" / f"{i}.txt").write_text(
            f"Document {i}. " + "words and more words " * 200
        )
    rc = main(
        [
            "tokenize",
            "--dataset",
            str(tmp_path / "txt"),
            "--output",
            str(tmp_path / "out"),
            "--vocab-size",
            "290",
            "--verify",
            "--set",
            "tokenizer.chat_tokens=1",
        ]
    )
    assert rc == 0
    assert "verified" in capsys.readouterr().out
    m = read_manifest(tmp_path / "out")
    assert m.tokens("train") > 0 and m.tokens("val") > 0 and 260 < m.vocab_size <= 290
    tok = load_tokenizer(tmp_path / "out" / "tokenizer.json")
    text = "".join(
        tok.decode(np.asarray(open_shard(p)).tolist(), skip_special_tokens=True)
        for p in shard_paths(tmp_path / "out", "train")
    )
    assert "Document 0. words" in text
    saved = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert saved["format"] == "kiln-tokens"


def test_bad_arguments_give_clear_errors(tmp_path, capsys):
    rc = main(["tokenize", "--dataset", str(tmp_path / "missing"), "--output", str(tmp_path / "o")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    rc = main(["tokenize", "--dataset", str(tmp_path / "empty"), "--output", str(tmp_path / "o")])
    assert rc == 2 and "no .txt or .md files" in capsys.readouterr().err
    with pytest.raises(ValueError, match="too small"):
        tokenize(tmp_path / "empty", tmp_path / "o", TokenizerConfig(vocab_size=100))


def test_single_text_file_gets_a_val_split(tmp_path):
    text = "".join(f"Line {i} of a single small file, with words.\n" for i in range(300))
    (tmp_path / "one.txt").write_text(text)
    m = tokenize(
        tmp_path / "one.txt", tmp_path / "out", TokenizerConfig(vocab_size=280, chat_tokens=0)
    )
    assert m.tokens("train") > m.tokens("val") > 0
    tok = load_tokenizer(tmp_path / "out" / "tokenizer.json")
    decoded = [
        tok.decode(np.asarray(open_shard(p)).tolist(), skip_special_tokens=True)
        for split in ("train", "val")
        for p in shard_paths(tmp_path / "out", split)
    ]
    assert sorted("".join(decoded).splitlines()) == sorted(text.splitlines())
