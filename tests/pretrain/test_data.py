import numpy as np
import pytest

from kiln.components.pretrain.data import TokenLoader
from kiln.components.tokenization.manifest import Manifest, ShardEntry, write_manifest
from kiln.components.tokenization.shards import write_shard


def tokens_dir(root, arrays, vocab_size):
    """A tokens directory as `kiln tokenize` writes it: train/ shards and manifest.json."""
    (root / "train").mkdir(parents=True)
    entries = []
    for i, ids in enumerate(arrays):
        name = f"train/{i:06d}.bin"
        sha = write_shard(root / name, ids, vocab_size=vocab_size)
        entries.append(ShardEntry(file=name, tokens=len(ids), sha256=sha))
    write_manifest(root, Manifest(vocab_size, "uint16", eot_id=0, splits={"train": entries}))
    return [root / e.file for e in entries]


@pytest.fixture
def shards(tmp_path):
    return tokens_dir(
        tmp_path, [np.arange(n) + 10_000 * i for i, n in enumerate([1000, 333, 2049])], 65536
    )


def rows(loader, steps):
    return [loader.next_batch()[0] for _ in range(steps)]


def test_windows_are_shifted_targets(shards):
    x, y = TokenLoader(shards, seq_len=16, batch_size=4, seed=0).next_batch()
    assert x.shape == y.shape == (4, 16)
    assert (y[:, :-1] == x[:, 1:]).all() and (y[:, -1] == x[:, -1] + 1).all()


def test_deterministic_given_seed_and_differs_across_seeds(shards):
    a = rows(TokenLoader(shards, 16, 4, seed=1), 30)
    b = rows(TokenLoader(shards, 16, 4, seed=1), 30)
    c = rows(TokenLoader(shards, 16, 4, seed=2), 30)
    assert all((p == q).all() for p, q in zip(a, b, strict=True))
    assert any((p != q).any() for p, q in zip(a, c, strict=True))


def test_ranks_are_disjoint_and_cover_the_epoch(shards):
    seq, world = 16, 3
    total = sum((n - 1) // seq for n in [1000, 333, 2049])
    steps = total // (2 * world)
    seen = []
    for rank in range(world):
        loader = TokenLoader(shards, seq, 2, rank=rank, world_size=world, seed=5)
        seen += [tuple(r[:1].tolist()) for x in rows(loader, steps) for r in x]
    assert len(seen) == len(set(seen)) == steps * 2 * world  # no window served twice


def test_state_restores_exactly_across_epochs(shards):
    loader = TokenLoader(shards, 16, 8, seed=3)
    rows(loader, 40)  # past the first epoch boundary
    state = loader.state_dict()
    assert state["epoch"] >= 1
    expected = rows(loader, 10)
    fresh = TokenLoader(shards, 16, 8, seed=3)
    fresh.load_state_dict(state)
    assert all((p == q).all() for p, q in zip(expected, rows(fresh, 10), strict=True))


def test_too_little_data_is_a_clear_error(tmp_path):
    paths = tokens_dir(tmp_path, [np.arange(20)], vocab_size=100)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        TokenLoader(paths, seq_len=16, batch_size=4)
