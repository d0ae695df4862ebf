import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from kiln.components.ingest.document import Document, Problem, ReadError
from kiln.components.ingest.readers import Reader, expand, file_format, split_source
from kiln.components.ingest.streams import iter_chunks, iter_lines


def read(path, **kw):
    args = dict(
        text_field="text", id_field="id", max_line=1 << 20, max_file=1 << 24, on_bad_utf8="replace"
    )
    args.update(kw)
    return list(Reader("src", **args).read(str(path)))


def texts(items):
    return [d.text for d in items if isinstance(d, Document)]


def test_formats_and_compression(tmp_path):
    rows = [{"id": f"r{i}", "text": f"text {i}"} for i in range(3)]
    jsonl = "".join(json.dumps(r) + "\n" for r in rows).encode()
    (tmp_path / "a.jsonl").write_bytes(jsonl)
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(jsonl))
    (tmp_path / "c.ndjson.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl))
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "e.txt").write_text("plain text\nsecond line")
    (tmp_path / "f.md.gz").write_bytes(gzip.compress(b"# Title\n\nbody"))
    pq.write_table(
        pa.table({"id": ["p0", "p1"], "text": ["pq one", "pq two"]}), tmp_path / "g.parquet"
    )
    want = ["text 0", "text 1", "text 2"]
    for name in ("a.jsonl", "b.jsonl.gz", "c.ndjson.zst", "d.json"):
        items = read(tmp_path / name)
        assert texts(items) == want and [d.id for d in items] == ["r0", "r1", "r2"], name
    assert texts(read(tmp_path / "e.txt")) == ["plain text\nsecond line"]
    assert texts(read(tmp_path / "f.md.gz")) == ["# Title\n\nbody"]
    items = read(tmp_path / "g.parquet")
    assert texts(items) == ["pq one", "pq two"] and items[1].id == "p1" and items[1].line == 2
    assert read(tmp_path / "g.parquet", text_field="body")[0].kind == "missing_text"


def test_expand_sources_and_formats(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/x.jsonl", "d/sub/y.txt.zst", "d/README", "d/z.csv"):
        (tmp_path / name).write_text("")
    assert [p.split("/d/")[1] for p in expand(str(tmp_path / "d"))] == ["sub/y.txt.zst", "x.jsonl"]
    assert len(expand(str(tmp_path / "d" / "**" / "*.t*"))) == 1
    assert expand(str(tmp_path / "missing")) == []
    assert split_source("web=data/crawl/") == ("web", "data/crawl/")
    assert split_source("data/books.jsonl.gz") == ("books", "data/books.jsonl.gz")
    assert split_source("s3://b/web/") == ("web", "s3://b/web/")
    assert file_format("a.JSONL.ZST") == "jsonl" and file_format("a.csv") is None


def test_bounded_lines():
    chunks = [b"short\n", b"x" * 50, b"y" * 60 + b"\nafter\n", b"tail"]
    assert list(iter_lines(iter(chunks), 100)) == [
        (1, b"short"),
        (2, None),
        (3, b"after"),
        (4, b"tail"),
    ]


def test_compression_bomb_and_truncation(tmp_path):
    (tmp_path / "bomb.txt.zst").write_bytes(zstandard.ZstdCompressor().compress(b"\0" * (8 << 20)))
    with pytest.raises(ReadError, match="decompressed_too_large"):
        list(iter_chunks(str(tmp_path / "bomb.txt.zst"), 1 << 20))
    data = gzip.compress(b"".join(b'{"text": "line %d"}\n' % i for i in range(20000)))
    (tmp_path / "t.jsonl.gz").write_bytes(data[: len(data) // 2])
    items = read(tmp_path / "t.jsonl.gz")
    assert isinstance(items[-1], Problem) and items[-1].kind == "corrupt_gzip"
    assert len(texts(items)) > 1000  # the good records before the damage survive
    zdata = zstandard.ZstdCompressor().compress(
        b"".join(b'{"text": "z %d"}\n' % i for i in range(20000))
    )
    (tmp_path / "t.jsonl.zst").write_bytes(zdata[: len(zdata) // 2])
    items = read(tmp_path / "t.jsonl.zst")
    assert items[-1].kind == "corrupt_zstd" and len(texts(items)) > 100


def test_bad_utf8_replace_or_skip(tmp_path):
    (tmp_path / "u.jsonl").write_bytes(b'{"text": "ok \xff\xfe bytes"}\n{"text": "fine"}\n')
    assert texts(read(tmp_path / "u.jsonl")) == ["ok \ufffd\ufffd bytes", "fine"]
    items = read(tmp_path / "u.jsonl", on_bad_utf8="skip")
    assert items[0].kind == "bad_utf8" and items[0].line == 1 and texts(items) == ["fine"]


def test_huge_line_is_streamed_not_held(tmp_path):
    import tracemalloc

    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as f:
        f.write(b'{"text": "before"}\n{"text": "')
        for _ in range(40):
            f.write(b"x" * (1 << 20))  # one 40 MiB line
        f.write(b'"}\n{"text": "after"}\n')
    tracemalloc.start()
    items = read(path, max_line=1 << 20, max_file=1 << 30)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert texts(items) == ["before", "after"] and items[1].kind == "line_too_long"
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB while reading a 40 MiB line"


def test_whole_file_formats_over_the_limit_and_unknown_suffix(tmp_path):
    (tmp_path / "big.txt").write_text("y" * 5000)
    (tmp_path / "big.json").write_text(json.dumps([{"text": "z" * 5000}]))
    (tmp_path / "data.csv").write_text("a,b\n")
    assert read(tmp_path / "big.txt", max_line=1000)[0].kind == "too_large"
    assert read(tmp_path / "big.json", max_line=1000)[0].kind == "too_large"
    reader = Reader("src", "text", "id", 1 << 20, 1 << 24, "replace")
    assert list(reader.read(str(tmp_path / "data.csv"))) == []
    assert reader.skipped == "unsupported extension .csv"  # listed in stats.json as skipped
