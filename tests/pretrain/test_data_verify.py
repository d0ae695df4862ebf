"""Training verifies its token shards before reading them: size, sha256, ids < vocabulary."""

import numpy as np
import pytest

from kiln.components.pretrain.data import TokenLoader
from kiln.components.tokenization import manifest as manifest_mod
from kiln.components.tokenization.manifest import (
    Manifest,
    ShardEntry,
    read_manifest,
    verify_shards,
    write_manifest,
)
from kiln.components.tokenization.shards import HEADER_SIZE, sha256_file, write_shard

VOCAB = 320


@pytest.fixture
def tokens(tmp_path):
    """A tokens directory with one train shard of ids below VOCAB."""
    root = tmp_path / "tokens"
    (root / "train").mkdir(parents=True)
    ids = np.random.default_rng(0).integers(0, VOCAB, size=4000)
    sha = write_shard(root / "train/000000.bin", ids, vocab_size=VOCAB)
    entry = ShardEntry(file="train/000000.bin", tokens=ids.size, sha256=sha)
    write_manifest(root, Manifest(VOCAB, "uint16", eot_id=0, splits={"train": [entry]}))
    return root


def loader(root):
    return TokenLoader([root / "train/000000.bin"], seq_len=16, batch_size=4)


def test_a_good_shard_loads_and_is_hashed_once_per_process(tokens, monkeypatch):
    loader(tokens).next_batch()
    calls = []
    monkeypatch.setattr(manifest_mod, "verify_shard", lambda *a, **k: calls.append(a))
    loader(tokens)  # e.g. the val loader built again at every evaluation
    assert calls == []


def test_flipped_bytes_stop_training_naming_the_shard(tokens):
    shard = tokens / "train/000000.bin"
    data = bytearray(shard.read_bytes())
    for i in range(16):  # 16 flipped bytes in the body: header and size still fine
        data[HEADER_SIZE + 100 + 37 * i] ^= 0x01
    shard.write_bytes(bytes(data))
    read_manifest(tokens)  # the cheap header checks cannot see it
    with pytest.raises(ValueError, match=rf"{shard}: sha256 does not match .*manifest.json"):
        loader(tokens)


def test_ids_beyond_the_vocabulary_are_a_clear_error_not_an_index_error(tokens):
    shard = tokens / "train/000000.bin"
    data = shard.read_bytes()
    shard.write_bytes(data[:HEADER_SIZE] + b"\xff" * (len(data) - HEADER_SIZE))
    with pytest.raises(ValueError, match=f"{shard}: sha256 does not match"):
        loader(tokens)
    # Even when the manifest vouches for those bytes, the ids are checked against the vocabulary.
    m = read_manifest(tokens)
    m.splits["train"][0].sha256 = sha256_file(shard)
    write_manifest(tokens, m)
    with pytest.raises(
        ValueError,
        match=rf"{shard}: token id 65535 at position 0 is not below the vocabulary size 320",
    ):
        loader(tokens)
    with pytest.raises(ValueError, match="token id 65535"):
        read_manifest(tokens, verify=True)


def test_shards_without_a_manifest_or_not_listed_are_refused(tmp_path, tokens):
    (tmp_path / "loose" / "train").mkdir(parents=True)
    write_shard(tmp_path / "loose/train/000000.bin", np.arange(100), vocab_size=VOCAB)
    with pytest.raises(
        ValueError, match="no manifest.json in .*loose to verify this shard against"
    ):
        verify_shards([tmp_path / "loose/train/000000.bin"])
    write_shard(tokens / "train/000001.bin", np.arange(100), vocab_size=VOCAB)
    with pytest.raises(ValueError, match=r"000001.bin: not listed in .*manifest.json"):
        verify_shards([tokens / "train/000001.bin"])
    TokenLoader([tmp_path / "loose/train/000000.bin"], 16, 2, verify=False)  # opted out


def _flip(shard):
    data = bytearray(shard.read_bytes())
    data[HEADER_SIZE + 10] ^= 0x01
    shard.write_bytes(bytes(data))


def test_a_damaged_val_shard_stops_training_instead_of_skipping_validation(
    tokens_dir, tiny_cfg, tmp_path
):
    import shutil

    from kiln.components.pretrain.runtime import Runtime
    from kiln.components.pretrain.train import Trainer
    from kiln.components.tokenization.shards import ShardError

    root = shutil.copytree(tokens_dir, tmp_path / "tokens")
    val = sorted((root / "val").glob("*.bin"))[0]
    _flip(val)
    with pytest.raises(ShardError, match=rf"{val}: sha256 does not match"):
        Trainer(tiny_cfg, root, Runtime(tmp_path / "a"))  # before the first step
    _flip(val)  # restored: training starts; damaged again mid-run, evaluation refuses it
    trainer = Trainer(tiny_cfg, root, Runtime(tmp_path / "b"))
    _flip(val)
    with pytest.raises(ShardError, match=rf"{val}: sha256 does not match"):
        trainer.evaluate()
    assert trainer.has_val
