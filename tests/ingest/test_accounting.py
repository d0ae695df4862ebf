"""Ingest's guarantees to the stages after it: a non-empty val split, every file accounted for."""

import json
import os

import pyarrow.parquet as pq
import pytest

from kiln.components.common.config import IngestConfig
from kiln.components.ingest import ingest
from kiln.components.ingest.stats import Stats
from kiln.components.ingest.writer import split_of, unit_hash


def write_docs(path, docs):
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in docs))


def split_ids(out, split):
    return [
        r["id"]
        for f in sorted((out / split).glob("*.parquet"))
        for r in pq.read_table(f).to_pylist()
    ]


def test_nine_documents_with_one_percent_val_still_get_a_val_document(tmp_path, make_prose, capsys):
    docs = [(f"doc{i}", make_prose(i)) for i in range(9)]
    assert all(split_of(i, 0.01, 0) == "train" for i, _ in docs)  # the hash alone gives val none
    (tmp_path / "in").mkdir()
    write_docs(tmp_path / "in" / "a.jsonl", docs)
    stats = ingest(
        [str(tmp_path / "in")], tmp_path / "out", IngestConfig(workers=1, val_fraction=0.01)
    )
    lowest = min((i for i, _ in docs), key=lambda i: unit_hash("split0", i))
    assert split_ids(tmp_path / "out", "val") == [lowest]
    assert len(split_ids(tmp_path / "out", "train")) == 8
    val = stats.splits["val"]
    assert val["docs"] == 1 and val["moved_in"] == 1 and val["bytes"] == len(dict(docs)[lowest])
    assert Stats.load(tmp_path / "out" / "stats.json").splits == stats.splits
    printed = capsys.readouterr().out
    assert "split val: 1 documents" in printed and "1 moved in to keep it non-empty" in printed
    assert "split train: 8 documents" in printed

    # The move depends on the set of documents only, not on their order.
    write_docs(tmp_path / "in" / "a.jsonl", docs[::-1])
    ingest([str(tmp_path / "in")], tmp_path / "rev", IngestConfig(workers=1, val_fraction=0.01))
    assert split_ids(tmp_path / "rev", "val") == [lowest]


def test_train_keeps_a_document_when_every_hash_falls_in_val(tmp_path, make_prose):
    (tmp_path / "in").mkdir()
    write_docs(tmp_path / "in" / "a.jsonl", [(f"d{i}", make_prose(i)) for i in range(3)])
    stats = ingest(
        [str(tmp_path / "in")], tmp_path / "out", IngestConfig(workers=1, val_fraction=0.999)
    )
    assert stats.splits["train"]["docs"] == 1 and stats.splits["val"]["docs"] == 2


def test_fewer_than_two_kept_documents_is_a_clear_error(tmp_path, make_prose):
    (tmp_path / "in").mkdir()
    write_docs(tmp_path / "in" / "a.jsonl", [("only", make_prose(1)), ("short", "too short")])
    with pytest.raises(ValueError) as err:
        ingest([str(tmp_path / "in")], tmp_path / "out", IngestConfig(workers=1))
    msg = str(err.value)
    assert "1 document(s) kept of 2 read (1 filtered" in msg
    assert "ingest.val_fraction=0.01 needs at least 2 (one for train, one for val)" in msg
    assert not (tmp_path / "out" / "stats.json").exists()  # an incomplete dataset
    # val_fraction=0 asks for no val split: one document is enough, none is not.
    stats = ingest(
        [str(tmp_path / "in")], tmp_path / "out", IngestConfig(workers=1, val_fraction=0)
    )
    assert stats.splits["train"]["docs"] == 1 and stats.splits["val"]["docs"] == 0
    write_docs(tmp_path / "in" / "a.jsonl", [("short", "too short")])
    with pytest.raises(ValueError, match=r"0 document\(s\) kept of 1 read .* needs at least 1"):
        ingest([str(tmp_path / "in")], tmp_path / "out", IngestConfig(workers=1, val_fraction=0))


def test_unsupported_and_broken_files_are_listed_in_stats_json(tmp_path, make_prose, capsys):
    d = tmp_path / "in"
    d.mkdir()
    write_docs(d / "a.jsonl", [(f"d{i}", make_prose(i)) for i in range(4)])
    (d / "b.jsonl.bz2").write_bytes(b"BZh91AY&SY")
    (d / "c.text").write_text(make_prose(9))
    (d / "LICENSE").write_text("MIT")
    os.symlink(d / "gone.txt", d / "dangling.txt")
    os.symlink("self.jsonl", d / "self.jsonl")
    stats = ingest([str(d)], tmp_path / "out", IngestConfig(workers=1, val_fraction=0.2))
    saved = json.loads((tmp_path / "out" / "stats.json").read_text())
    reasons = {os.path.basename(p): f.get("reason") for p, f in saved["per_file"].items()}
    assert reasons == {
        "a.jsonl": None,
        "b.jsonl.bz2": "unsupported extension .bz2",
        "c.text": "unsupported extension .text",
        "LICENSE": "no extension",
        "dangling.txt": "broken symlink",
        "self.jsonl": "symlink loop",
    }
    a = saved["per_file"][str(d / "a.jsonl")]
    assert (a["status"], a["in"], a["kept"], a["out"]) == ("read", 4, 4, 4)
    assert saved["files"] == 1 and sum(saved["skipped_files"].values()) == 5
    assert stats.skipped_files["broken symlink"] == 1
    assert "files skipped 5: " in capsys.readouterr().out
    # A directory of nothing readable says what it found.
    for f in ("a.jsonl",):
        (d / f).unlink()
    with pytest.raises(ValueError, match="matched no input files; found 5 that cannot be read: "):
        ingest([str(d)], tmp_path / "out2", IngestConfig(workers=1))


def test_unreadable_file_is_skipped_with_the_reason(tmp_path, make_prose):
    d = tmp_path / "in"
    d.mkdir()
    write_docs(d / "a.jsonl", [(f"d{i}", make_prose(i)) for i in range(3)])
    (d / "locked.txt").write_text(make_prose(7))
    (d / "locked.txt").chmod(0)
    if os.access(d / "locked.txt", os.R_OK):
        pytest.skip("running as root: a chmod 000 file is still readable")
    stats = ingest([str(d)], tmp_path / "out", IngestConfig(workers=1, val_fraction=0.2))
    entry = stats.per_file[str(d / "locked.txt")]
    assert entry == {"source": "in", "status": "skipped", "reason": "unreadable: permission denied"}
    assert stats.files == 1 and stats.documents_in == 3
    stats.check()


def test_stats_check_catches_a_file_that_does_not_balance(tmp_path, make_prose):
    d = tmp_path / "in"
    d.mkdir()
    write_docs(d / "a.jsonl", [(f"d{i}", make_prose(i)) for i in range(3)])
    stats = ingest([str(d)], tmp_path / "out", IngestConfig(workers=1, val_fraction=0.3))
    stats.check()
    stats.per_file[str(d / "a.jsonl")]["kept"] -= 1
    with pytest.raises(AssertionError, match="accounting broken for file"):
        stats.check()
