import numpy as np
import pytest

from kiln.components.tokenization.shards import (
    HEADER_SIZE,
    ShardError,
    open_shard,
    sha256_file,
    write_shard,
)


def test_round_trip_uint16_and_uint32(tmp_path):
    small = np.array([0, 1, 65535, 7], dtype=np.int64)
    digest = write_shard(tmp_path / "a.bin", small, vocab_size=65536)
    assert digest == sha256_file(tmp_path / "a.bin")
    got = open_shard(tmp_path / "a.bin")
    assert got.dtype == np.uint16 and got.tolist() == small.tolist()
    big = np.array([0, 70000, 3], dtype=np.int64)
    write_shard(tmp_path / "b.bin", big, vocab_size=100000)
    got = open_shard(tmp_path / "b.bin")
    assert got.dtype == np.uint32 and got.tolist() == big.tolist()
    assert (tmp_path / "b.bin").stat().st_size == HEADER_SIZE + 3 * 4


def test_corrupt_shards_are_refused(tmp_path):
    path = tmp_path / "s.bin"
    write_shard(path, np.arange(100), vocab_size=1000)
    data = path.read_bytes()
    (tmp_path / "trunc.bin").write_bytes(data[:-3])
    with pytest.raises(ShardError, match="truncated or corrupt"):
        open_shard(tmp_path / "trunc.bin")
    (tmp_path / "magic.bin").write_bytes(b"GARBAGE!" + data[8:])
    with pytest.raises(ShardError, match="not a Kiln token shard"):
        open_shard(tmp_path / "magic.bin")
    (tmp_path / "short.bin").write_bytes(data[:10])
    with pytest.raises(ShardError, match="shorter than"):
        open_shard(tmp_path / "short.bin")
    bad_version = bytearray(data)
    bad_version[8] = 9
    (tmp_path / "ver.bin").write_bytes(bytes(bad_version))
    with pytest.raises(ShardError, match="version 9"):
        open_shard(tmp_path / "ver.bin")


def test_ids_that_do_not_fit_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="non-negative"):
        write_shard(tmp_path / "n.bin", np.array([-1, 2]))
