import numpy as np
import pytest

from kiln.components.pretrain.data import TokenLoader
from kiln.components.tokenization.shards import write_shard


@pytest.fixture
def shards(tmp_path):
    paths = []
    for i, n in enumerate([1000, 333, 2049]):
        path = tmp_path / f"{i}.bin"
        write_shard(path, np.arange(n) + 10_000 * i, vocab_size=65536)
        paths.append(path)
    return paths


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
    write_shard(tmp_path / "s.bin", np.arange(20), vocab_size=100)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        TokenLoader([tmp_path / "s.bin"], seq_len=16, batch_size=4)
