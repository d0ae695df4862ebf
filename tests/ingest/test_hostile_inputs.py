"""Ingest against a corpus of hostile inputs mixed with good documents, built in the test.

The contract: no exception escapes, no good document is lost, every file found under the input
appears in stats.json (read, with counts that balance, or skipped with a reason), and the
accounting balances per file, per source and in total.
"""

import codecs
import gzip
import json
import os
import random

import pyarrow.parquet as pq
import zstandard

from kiln.components.common.config import IngestConfig
from kiln.components.ingest import ingest
from kiln.components.ingest.stats import Stats


def jsonl(*records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def kept_texts(out) -> set[str]:
    return {
        r["text"]
        for split in ("train", "val")
        for f in sorted((out / split).glob("*.parquet"))
        for r in pq.read_table(f).to_pylist()
    }


def everything_under(root) -> set[str]:
    """Every entry an ingest of `root` must account for: files, links of any kind."""
    found = set()
    for top, dirs, files in os.walk(root):
        found |= {os.path.join(top, d) for d in dirs if os.path.islink(os.path.join(top, d))}
        found |= {os.path.join(top, f) for f in files}
    return found


def build_hostile_corpus(root, prose):
    """Returns (input dir, good texts that must survive, expected skip reasons by name)."""
    d = root / "in"
    (d / "sub").mkdir(parents=True)
    (root / "elsewhere").mkdir()
    rng = random.Random(7)
    good = {i: prose(i) for i in range(1, 19)}

    def w(name: str, data: bytes) -> None:
        (d / name).write_bytes(data)

    # Good documents, in every supported shape and some awkward encodings.
    w("good.txt", good[1].encode())
    w("good.jsonl", jsonl({"id": "j2", "text": good[2]}, {"id": "j3", "text": good[3]}))
    w("good.jsonl.gz", gzip.compress(jsonl({"id": "g4", "text": good[4]})))
    w(
        "good.json",
        json.dumps([{"id": "a5", "text": good[5]}, {"id": "a6", "text": good[6]}]).encode(),
    )
    w("utf16_bom.txt", good[7].encode("utf-16"))  # BOM + native order
    w(
        "utf16_be.jsonl",
        codecs.BOM_UTF16_BE + jsonl({"id": "u8", "text": good[8]}).decode().encode("utf-16-be"),
    )
    w("crlf.txt", good[9].replace("\n", "\r\n").encode())
    w(
        "cr_only.jsonl",
        jsonl({"id": "c10", "text": good[10]}, {"id": "c11", "text": good[11]}).replace(
            b"\n", b"\r"
        ),
    )
    w("nul.txt", good[12].replace(" ", " \x00", 3).encode())
    w("utf32.txt", good[13].encode("utf-32"))
    w("sub/nested.md", good[14].encode())
    # Malformed JSON lines of every shape, around good records.
    w(
        "mixed.jsonl",
        jsonl([1, 2], {"id": "m-no-text"}, {"text": 5}, {"text": None})
        + b'{"text": "unterminated\n\n'
        + jsonl({"id": "m15", "text": good[15]})
        + b"not json at all\n",
    )
    w("array.json", json.dumps([{"id": "x16", "text": good[16]}, 3, {"body": "no text"}]).encode())
    w("broken.json", b'{"text": "never closed"')
    w(
        "huge_line.jsonl",
        jsonl({"id": "huge", "text": "word " * 60_000}, {"id": "h17", "text": good[17]}),
    )
    w("huge.txt", ("one enormous line " * 20_000).encode())
    w("ok.ndjson.zst", zstandard.ZstdCompressor().compress(jsonl({"id": "z18", "text": good[18]})))

    # Hostile files that are read and yield nothing good.
    w("empty.txt", b"")
    w("empty.jsonl", b"")
    w("binary.txt", b"\x89PNG\r\n\x1a\n" + bytes(rng.randrange(256) for _ in range(4096)))
    w("utf16_no_bom.txt", prose(20).encode("utf-16-le"))
    w("latin1.txt", ("Café crème à la française. " + prose(21)).encode("latin-1"))
    body = jsonl(*({"id": f"t{i}", "text": prose(100 + i)} for i in range(40)))
    gz = gzip.compress(body)
    w("trunc.jsonl.gz", gz[: len(gz) // 2])
    w("fake.jsonl.zst", bytes(rng.randrange(256) for _ in range(2048)))
    # Exact and near duplicates of good documents, across formats.
    w("zz_exact.jsonl", jsonl({"id": "dup1", "text": good[1]}))
    w("zz_exact.txt.gz", gzip.compress(good[2].encode()))
    w(
        "zz_near.txt",
        good[3].replace(" ", "  ", 1).replace(good[3].split()[5], "quasar", 1).encode(),
    )

    # Files that are found but not read.
    w("data.jsonl.bz2", b"BZh9 not really")
    w("notes.text", b"a .text file")
    w("README", good[1].encode())
    w("table.csv.gz", gzip.compress(b"a,b\n1,2\n"))
    os.symlink(d / "missing.jsonl", d / "broken.jsonl")
    os.symlink("loop.txt", d / "loop.txt")
    os.symlink(root / "elsewhere", d / "linked_dir")
    expected = {
        "data.jsonl.bz2": "unsupported extension .bz2",
        "notes.text": "unsupported extension .text",
        "README": "no extension",
        "table.csv.gz": "unsupported extension .csv.gz",
        "broken.jsonl": "broken symlink",
        "loop.txt": "symlink loop",
        "linked_dir": "symlink to a directory (not followed)",
    }
    locked = d / "locked.txt"
    locked.write_text(prose(40))
    locked.chmod(0)
    if os.access(locked, os.R_OK):  # root reads anything: then it is simply a good file
        good[40] = prose(40)
    else:
        expected["locked.txt"] = "unreadable: permission denied"
    return d, good, expected


def test_hostile_corpus_loses_no_good_document_and_accounts_for_every_file(tmp_path, make_prose):
    d, good, expected_skips = build_hostile_corpus(tmp_path, make_prose)
    out = tmp_path / "out"
    cfg = IngestConfig(workers=2, val_fraction=0.2, max_line_bytes=200_000, max_file_bytes=1 << 22)
    stats = ingest([str(d)], out, cfg)  # nothing escapes

    kept = kept_texts(out)
    lost = [i for i, text in good.items() if text not in kept]
    assert not lost, f"good documents lost: {lost}"

    # Every file found is in stats.json, read or skipped with the expected reason.
    saved = Stats.load(out / "stats.json")
    saved.check()
    assert set(saved.per_file) == everything_under(d)
    for name, reason in expected_skips.items():
        assert saved.per_file[str(d / name)] == {
            "source": "in",
            "status": "skipped",
            "reason": reason,
        }, name
    read = saved.read_files()
    assert len(read) == saved.files and sum(saved.skipped_files.values()) == len(expected_skips)

    # Accounting balances per file and in total, checked here independently of Stats.check().
    for path, f in read.items():
        assert f["in"] == f["kept"] + f["filtered"] + f["duplicates"] + f["unreadable"], path
    for key, total in [
        ("in", saved.documents_in),
        ("kept", saved.kept),
        ("filtered", sum(saved.filtered.values())),
        ("duplicates", saved.duplicates_exact + saved.duplicates_near),
        ("unreadable", sum(saved.unreadable.values())),
    ]:
        assert sum(f[key] for f in read.values()) == total, key
    assert saved.documents_in == saved.accounted()
    rejects = (out / "rejects.jsonl").read_text().splitlines()
    assert len(rejects) == saved.documents_in - saved.kept

    # Each hostile kind ended where it should.
    u = saved.unreadable
    assert u["binary"] == 1 and u["utf16_without_bom"] == 1
    assert u["corrupt_gzip"] == 1 and u["corrupt_zstd"] == 1
    assert u["not_an_object"] == 2 and u["missing_text"] == 3 and u["text_not_string"] == 1
    assert u["bad_json"] == 3 and u["line_too_long"] == 1 and u["too_large"] == 1
    assert saved.filtered["empty"] == 1 and read[str(d / "empty.jsonl")]["in"] == 0
    assert saved.duplicates_exact >= 2 and saved.duplicates_near >= 1
    assert read[str(d / "zz_near.txt")]["duplicates"] == 1
    assert saved.repaired["bad_utf8_replaced"] >= 1  # latin-1: kept with U+FFFD, counted
    assert read[str(d / "utf16_bom.txt")]["encoding"] == "utf-16-le"
    assert read[str(d / "utf16_be.jsonl")]["encoding"] == "utf-16-be"
    assert read[str(d / "utf32.txt")]["encoding"] == "utf-32-le"
    assert read[str(d / "trunc.jsonl.gz")]["kept"] > 5  # records before the damage survive
    assert not any("\x00" in t or "\ufeff" in t for t in kept)
    assert stats.kept == saved.kept and saved.splits["val"]["docs"] > 0
