import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from kiln.components.common.config import IngestConfig
from kiln.components.ingest import ingest
from kiln.components.ingest.stats import Stats
from kiln.pipelines.cli import main


def cfg(**kw):
    c = IngestConfig(workers=1, val_fraction=0.2)
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def rows(out, split=None):
    splits = [split] if split else ["train", "val"]
    return [
        r
        for s in splits
        for f in sorted((out / s).glob("*.parquet"))
        for r in pq.read_table(f).to_pylist()
    ]


def jl(obj):
    return json.dumps(obj).encode() + b"\r\n"


def build_bad_corpus(root, prose):
    d = root / "bad"
    d.mkdir()
    lines = [
        b"\xef\xbb\xbf" + jl({"id": "g1", "text": prose(1)}),
        b"{not json\r\n",
        jl({"id": "g2", "text": prose(2).replace(" ", " \x00", 3) + "\ufeff"}),
        jl({"id": "m1"}),
        jl({"text": 123}),
        jl([1, 2]),
        jl({"text": "   \n\t "}),
        b'{"id": "g3", "text": "' + prose(3).replace("\n", "\\n").encode() + b' \xff"}\r\n',
        jl({"id": "long", "text": "x " * 150_000}),
        jl({"id": "g5", "text": prose(5)}),
        b"\r\n",
        jl({"id": "g6", "text": prose(1)}),
    ]
    (d / "mixed.jsonl").write_bytes(b"".join(lines))
    body = b"".join(jl({"id": f"t{i}", "text": prose(100 + i)}) for i in range(60))
    gz = gzip.compress(body)
    (d / "trunc.jsonl.gz").write_bytes(gz[: len(gz) * 2 // 3])
    zs = zstandard.ZstdCompressor().compress(body)
    (d / "trunc.jsonl.zst").write_bytes(zs[: len(zs) * 2 // 3])
    (d / "bomb.txt.zst").write_bytes(zstandard.ZstdCompressor().compress(b"a" * (4 << 20)))
    os.symlink(d / "does-not-exist.jsonl", d / "broken.jsonl")
    (d / "empty.txt").write_text("")
    (d / "doc.txt").write_bytes(prose(9).replace("\n", "\r\n").encode())
    return d


def test_bad_input_corpus_balances_and_keeps_good_records(tmp_path, make_prose):
    bad = build_bad_corpus(tmp_path, make_prose)
    out = tmp_path / "out"
    stats = ingest([str(bad)], out, cfg(max_line_bytes=100_000, max_file_bytes=1 << 20))
    u = stats.unreadable
    assert u["bad_json"] == 1 and u["missing_text"] == 1 and u["text_not_string"] == 1
    assert u["not_an_object"] == 1 and u["line_too_long"] == 1 and "unreadable_file" not in u
    assert stats.per_file[str(bad / "broken.jsonl")]["reason"] == "broken symlink"
    assert u["corrupt_gzip"] == 1 and u["corrupt_zstd"] == 1 and u["decompressed_too_large"] == 1
    assert stats.filtered["empty"] == 2 and stats.duplicates_exact == 1
    assert stats.repaired["bad_utf8_replaced"] == 1 and stats.repaired["control_chars_removed"] >= 4
    assert stats.documents_in == stats.accounted()
    written = {r["id"]: r["text"] for r in rows(out)}
    assert {"g1", "g2", "g3", "g5"} <= set(written) and "g6" not in written
    assert sum(k.startswith("t") for k in written) > 30  # records before the damage survive
    assert "\x00" not in written["g2"] and "\ufeff" not in written["g2"]
    assert written["g3"].endswith("\ufffd") and "\r" not in written[str(bad / "doc.txt")]
    saved = Stats.load(out / "stats.json")
    assert saved.documents_in == stats.documents_in and saved.kept == len(written)
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    bad_json = [r for r in rejects if r["reason"] == "bad_json"]
    assert bad_json == [
        {
            "reason": "bad_json",
            "file": str(bad / "mixed.jsonl"),
            "line": 2,
            "detail": bad_json[0]["detail"],
        }
    ]
    assert any(r["reason"] == "line_too_long" and r["line"] == 9 for r in rejects)
    assert len(rejects) == stats.documents_in - stats.kept


def test_zero_inputs_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="matched no input files"):
        ingest([str(tmp_path / "empty")], tmp_path / "out", cfg())
    assert (
        main(["ingest", "--input", str(tmp_path / "nope*.jsonl"), "--output", str(tmp_path / "o")])
        == 2
    )
    assert "matched no input files" in capsys.readouterr().err


def write_jsonl(path, docs):
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in docs))


def test_workers_give_identical_output_and_global_dedup(tmp_path, make_prose):
    d = tmp_path / "in"
    d.mkdir()
    for f in range(4):  # every file repeats docs of the previous one: duplicates across workers
        docs = [(f"f{f}-{i}", make_prose(f * 10 + i)) for i in range(10)]
        docs += [(f"f{f}-dup{i}", make_prose((f - 1) * 10 + i)) for i in range(3) if f]
        write_jsonl(d / f"{f}.jsonl", docs)
    one = ingest([str(d)], tmp_path / "one", cfg())
    two = ingest([str(d)], tmp_path / "two", cfg(workers=2))
    assert one.duplicates_exact == two.duplicates_exact == 9
    assert rows(tmp_path / "one") == rows(tmp_path / "two")
    for s in ("train", "val"):
        a = sorted((tmp_path / "one" / s).glob("*.parquet"))
        b = sorted((tmp_path / "two" / s).glob("*.parquet"))
        assert [x.read_bytes() for x in a] == [x.read_bytes() for x in b]


def test_split_is_deterministic_and_by_id(tmp_path, make_prose):
    d = tmp_path / "in"
    d.mkdir()
    write_jsonl(d / "a.jsonl", [(f"a{i}", make_prose(i)) for i in range(60)])
    ingest([str(d)], tmp_path / "o1", cfg())
    val1 = {r["id"] for r in rows(tmp_path / "o1", "val")}
    assert 3 < len(val1) < 25
    write_jsonl(d / "0-first.jsonl", [(f"b{i}", make_prose(500 + i)) for i in range(30)])
    ingest([str(d)], tmp_path / "o2", cfg())
    val2 = {r["id"] for r in rows(tmp_path / "o2", "val")}
    assert {i for i in val2 if i.startswith("a")} == val1  # unaffected by other files or order
    ingest([str(d)], tmp_path / "o3", cfg(split_seed=7))
    assert {r["id"] for r in rows(tmp_path / "o3", "val")} != val2


def test_source_weights_language_and_pii(tmp_path, make_prose):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_jsonl(
        tmp_path / "a" / "x.jsonl",
        [(f"a{i}", make_prose(i) + "\nMail me: jo@ex.com") for i in range(20)],
    )
    french = (
        "Le chat noir dort sur la table de la cuisine pendant que les enfants jouent dans le jardin. "
        * 8
    )
    write_jsonl(
        tmp_path / "b" / "y.jsonl",
        [(f"b{i}", make_prose(100 + i)) for i in range(40)] + [("fr", french)],
    )
    c = cfg(source_weights={"web": 2.0, "b": 0.5}, languages=["en"], shard_bytes=4000)
    stats = ingest([f"web={tmp_path / 'a'}", str(tmp_path / "b")], tmp_path / "out", c)
    web = stats.sources["web"]
    assert (web["weight"], web["in"], web["kept"], web["out"]) == (2.0, 20, 20, 40)
    b = stats.sources["b"]
    assert b["in"] == 41 and 8 < b["kept"] < 32 and b["out"] == b["kept"]
    assert b["filtered"] == 41 - b["kept"]  # downsampled + the French document
    assert stats.filtered["downsampled"] == 40 - b["kept"] and stats.filtered["language"] == 1
    assert stats.pii_redacted == {"email": 20}
    out = rows(tmp_path / "out")
    ids = {r["id"] for r in out}
    assert "a3" in ids and "a3#1" in ids
    split = {r["id"]: s for s in ("train", "val") for r in rows(tmp_path / "out", s)}
    assert all(split[f"a{i}"] == split[f"a{i}#1"] for i in range(20))  # copies share a split
    assert all("<EMAIL>" in r["text"] for r in out if r["source"] == "web")
    assert len(list((tmp_path / "out" / "train").glob("*.parquet"))) > 3  # bounded shards


def test_hf_input_offline_and_tokenize_end_to_end(tmp_path, make_prose, capsys):
    from kiln.components.common.config import TokenizerConfig
    from kiln.components.tokenization import tokenize
    from kiln.components.tokenization.manifest import read_manifest

    split_dir = tmp_path / "hub" / "default" / "train"
    split_dir.mkdir(parents=True)
    table = pa.table(
        {"id": [f"h{i}" for i in range(30)], "text": [make_prose(i) for i in range(30)]}
    )
    pq.write_table(table, split_dir / "0000.parquet")
    rc = main(
        [
            "ingest",
            "--input",
            f"hf://{tmp_path / 'hub'}@train",
            "--output",
            str(tmp_path / "ds"),
            "--set",
            "ingest.val_fraction=0.2",
            "--workers",
            "1",
        ]
    )
    assert rc == 0 and "check: 30 = 30 kept" in capsys.readouterr().out
    assert {r["source"] for r in rows(tmp_path / "ds")} == {"hub"}
    tokenize(tmp_path / "ds", tmp_path / "tok", TokenizerConfig(vocab_size=300, chat_tokens=1))
    m = read_manifest(tmp_path / "tok", verify=True)
    assert m.tokens("train") > 0 and m.tokens("val") > 0
