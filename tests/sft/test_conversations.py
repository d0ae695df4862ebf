"""The SFT conversations stage: every record accounted for, exact dedup, a stable split.

Run: .venv/bin/pytest tests/sft/test_conversations.py -q
"""

import gzip
import hashlib
import json
import os
from itertools import zip_longest

import pytest
import zstandard

from kiln.components.common import storage
from kiln.components.common.config import SFTConfig
from kiln.components.common.errors import UserError
from kiln.components.sft.conversation_records import REASONS, conversation_hash
from kiln.components.sft.conversations import conversations, load_conversations
from kiln.components.sft.step import conversations_step
from kiln.pipelines.cli import main

NO_VAL = SFTConfig(val_fraction=0.0, min_val=0)


def chat(i, turns=1, system=False):
    """A valid conversation, distinct for each `i`."""
    messages = [{"role": "system", "content": "Be brief."}] if system else []
    for t in range(turns):
        messages.append({"role": "user", "content": f"question {i}.{t}"})
        messages.append({"role": "assistant", "content": f"answer {i}.{t}"})
    return {"messages": messages}


def write_jsonl(path, records):
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in records))
    return path


def user(text):
    return {"role": "user", "content": text}


def bot(text):
    return {"role": "assistant", "content": text}


def kept_conversations(out):
    return load_conversations(out, "train") + load_conversations(out, "val")


BAD = {
    "invalid_json": '{"messages": [\n',
    "not_an_object": [1, 2],
    "missing_messages": {"text": "no messages here"},
    "empty_messages": {"messages": []},
    "bad_role": {"messages": [user("hi"), {"role": "bot", "content": "hello"}]},
    "non_string_content": {"messages": [user("hi"), {"role": "assistant", "content": 7}]},
    "empty_content": {"messages": [user("hi"), bot(" \n\t ")]},
    "assistant_first": {"messages": [bot("hello"), user("hi")]},
    "system_not_first": {"messages": [user("hi"), {"role": "system", "content": "x"}, bot("y")]},
    "roles_not_alternating": {"messages": [user("a"), user("b"), bot("c")]},
    "no_assistant_reply": {"messages": [user("a"), bot("b"), user("c")]},
    "message_too_long": {"messages": [user("x" * 300), bot("ok")]},
}


def test_every_bad_record_kind_is_counted_with_its_reason_and_no_good_one_is_lost(tmp_path):
    good = [chat(i, turns=1 + i % 3, system=i % 2 == 0) for i in range(10)]
    bad = list(BAD.values()) * 2
    records = [r for pair in zip_longest(good, bad) for r in pair if r is not None]
    records.append("\n")  # a blank line is a separator, not a record
    write_jsonl(tmp_path / "mixed.jsonl", records)
    cfg = SFTConfig(val_fraction=0.3, min_val=0, max_message_chars=100)
    stats = conversations(str(tmp_path / "mixed.jsonl"), tmp_path / "out", cfg)
    assert set(BAD) | {"unreadable_file"} == set(REASONS)
    assert stats.rejected == {reason: 2 for reason in BAD}
    assert stats.kept == 10 and stats.duplicates == 0 and stats.records_in == 10 + 2 * len(BAD)
    kept = kept_conversations(tmp_path / "out")
    assert sorted(map(json.dumps, kept)) == sorted(json.dumps(g["messages"]) for g in good)
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").open()]
    assert sorted(r["reason"] for r in rejects) == sorted(list(BAD) * 2)
    assert all(r["file"] == str(tmp_path / "mixed.jsonl") and r["line"] > 0 for r in rejects)
    too_long = next(r for r in rejects if r["reason"] == "message_too_long")
    assert len(too_long["excerpt"]) == 200 and "max_message_chars=100" in too_long["detail"]


def test_prompt_completion_becomes_user_and_assistant_and_the_system_prompt_is_added(tmp_path):
    records = [
        {"prompt": "What is 2+2?", "completion": "4", "id": 1},
        {"prompt": "Café\r\nmenu", "completion": "Cafe\u0301 ok  "},  # NFC, CRLF → LF, spaces kept
        {"messages": [{"role": "system", "content": "Own."}, user("q"), bot("a")]},
        {"prompt": "x", "completion": 3},
    ]
    write_jsonl(tmp_path / "pc.jsonl", records)
    cfg = SFTConfig(val_fraction=0.0, min_val=0, system_prompt="Be kind.")
    stats = conversations([str(tmp_path / "pc.jsonl")], tmp_path / "out", cfg)
    assert stats.kept == 3 and stats.rejected == {"non_string_content": 1}
    sys_kind = {"role": "system", "content": "Be kind."}
    assert load_conversations(tmp_path / "out", "train") == [
        [sys_kind, user("What is 2+2?"), bot("4")],
        [sys_kind, user("Café\nmenu"), bot("Café ok  ")],
        [{"role": "system", "content": "Own."}, user("q"), bot("a")],
    ]
    assert stats.messages == {"system": 3, "user": 3, "assistant": 3}


def test_duplicates_after_normalization_are_counted_and_the_first_is_kept(tmp_path):
    first = {"messages": [user("Cafe\u0301\r\nbar"), bot("x")], "meta": "first"}
    same = {"messages": [user("Café\nbar"), bot("x")], "meta": "other keys do not matter"}
    write_jsonl(tmp_path / "a.jsonl", [first, chat(1), same, chat(1)])
    write_jsonl(tmp_path / "b.jsonl", [chat(1), chat(2)])
    stats = conversations([str(tmp_path)], tmp_path / "out", NO_VAL)
    assert (stats.kept, stats.duplicates) == (3, 3)
    assert stats.sources == {str(tmp_path / "a.jsonl"): 4, str(tmp_path / "b.jsonl"): 2}
    assert load_conversations(tmp_path / "out")[0] == [user("Café\nbar"), bot("x")]


def test_split_is_deterministic_and_adding_data_moves_no_conversation(tmp_path):
    cfg = SFTConfig(val_fraction=0.25, min_val=0)
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", [chat(i) for i in range(40)])
    first = conversations([str(tmp_path / "in")], tmp_path / "one", cfg)
    again = conversations([str(tmp_path / "in")], tmp_path / "two", cfg)
    assert first.digest == again.digest and 0 < first.val < 40
    write_jsonl(tmp_path / "in" / "b.jsonl", [chat(i) for i in range(40, 100)])
    more = conversations([str(tmp_path / "in")], tmp_path / "one", cfg)  # replaces the output
    assert more.kept == 100
    for split in ("train", "val"):
        before = load_conversations(tmp_path / "two", split)
        after = load_conversations(tmp_path / "one", split)
        assert after[: len(before)] == before


def test_min_val_moves_the_smallest_hash_train_conversations_to_val(tmp_path):
    chats = [chat(i)["messages"] for i in range(20)]
    write_jsonl(tmp_path / "a.jsonl", [{"messages": m} for m in chats])
    five = SFTConfig(val_fraction=0.0, min_val=5)
    stats = conversations(str(tmp_path / "a.jsonl"), tmp_path / "out", five)
    assert (stats.train, stats.val) == (15, 5)
    smallest = sorted(chats, key=conversation_hash)[:5]
    val = load_conversations(tmp_path / "out", "val")
    assert sorted(val, key=conversation_hash) == smallest
    assert load_conversations(tmp_path / "out", "train") == [m for m in chats if m not in val]
    eleven = SFTConfig(val_fraction=0.0, min_val=11)
    few = conversations(str(tmp_path / "a.jsonl"), tmp_path / "few", eleven)
    assert few.val == 0  # 20 < 2 * 11: train keeps everything
    none = conversations(str(tmp_path / "a.jsonl"), tmp_path / "none", NO_VAL)
    assert none.val == 0 and load_conversations(tmp_path / "none", "val") == []


def test_stats_json_accounts_for_every_record(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [chat(1), chat(1), BAD["bad_role"], "not json\n", chat(2)])
    cfg = SFTConfig(val_fraction=0.5, min_val=1)
    stats = conversations(str(tmp_path / "a.jsonl"), tmp_path / "out", cfg)
    saved = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert (
        saved["records_in"]
        == 5
        == saved["kept"] + saved["duplicates"] + sum(saved["rejected"].values())
    )
    assert saved["train"] + saved["val"] == saved["kept"] == 2
    assert saved["rejected"] == {"bad_role": 1, "invalid_json": 1} and saved == stats.to_dict()
    body = b"".join((tmp_path / "out" / f"{s}.jsonl").read_bytes() for s in ("train", "val"))
    assert saved["digest"] == hashlib.sha256(body).hexdigest()
    assert saved["chars"]["user"] == len("question 1.0") + len("question 2.0")
    assert sorted(os.listdir(tmp_path)) == ["a.jsonl", "out"]  # no staging directory left


def test_json_list_and_compressed_jsonl_inputs_are_read(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps([chat(1), chat(2), {"messages": "x"}]))
    jsonl = "".join(json.dumps(chat(i)) + "\n" for i in (3, 4)).encode()
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(jsonl))
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl))
    (tmp_path / "notes.txt").write_text("not conversations")
    stats = conversations([str(tmp_path / "*.*")], tmp_path / "out", NO_VAL)
    assert (stats.kept, stats.duplicates, stats.rejected) == (4, 2, {"missing_messages": 1})
    assert stats.skipped_files == {str(tmp_path / "notes.txt"): "not .jsonl or .json"}
    reject = json.loads((tmp_path / "out" / "rejects.jsonl").read_text())
    assert reject["file"] == str(tmp_path / "list.json") and reject["line"] == 3


def test_an_unreadable_file_is_one_rejected_record(tmp_path):
    write_jsonl(tmp_path / "good.jsonl", [chat(1)])
    (tmp_path / "bad.jsonl.gz").write_bytes(b"this is not gzip at all")
    (tmp_path / "gone.jsonl").symlink_to(tmp_path / "nowhere.jsonl")
    stats = conversations([str(tmp_path)], tmp_path / "out", NO_VAL)
    assert stats.kept == 1 and stats.rejected == {"unreadable_file": 2}
    assert stats.sources[str(tmp_path / "bad.jsonl.gz")] == 1
    rejects = (tmp_path / "out" / "rejects.jsonl").read_text()
    assert "broken symlink" in rejects and "corrupt_gzip" in rejects


def test_no_records_or_a_foreign_output_directory_are_user_errors_that_write_nothing(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="no records"):
        conversations(str(tmp_path / "empty.jsonl"), tmp_path / "out", NO_VAL)
    assert not (tmp_path / "out").exists()
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("precious")
    write_jsonl(tmp_path / "a.jsonl", [chat(1)])
    with pytest.raises(UserError, match="thesis.tex"):
        conversations(str(tmp_path / "a.jsonl"), tmp_path / "home", NO_VAL)
    assert os.listdir(tmp_path / "home") == ["thesis.tex"]


def test_cli_writes_the_dataset_and_prints_a_one_line_summary(tmp_path, capsys):
    write_jsonl(tmp_path / "a.jsonl", [chat(i) for i in range(12)] + [chat(0), BAD["bad_role"]])
    out = tmp_path / "out"
    argv = ["sft-data", "--input", str(tmp_path / "a.jsonl"), "--output", str(out)]
    assert main([*argv, "--set", "sft.val_fraction=0", "--set", "sft.min_val=3"]) == 0
    line = capsys.readouterr().out.strip()
    assert line == (
        "sft-data: 14 records → 12 kept (9 train, 3 val), 1 duplicates, 1 rejected (bad_role 1)"
    )
    assert sorted(os.listdir(out)) == ["rejects.jsonl", "stats.json", "train.jsonl", "val.jsonl"]


def test_cli_help_names_every_reject_reason(capsys):
    with pytest.raises(SystemExit):
        main(["sft-data", "--help"])
    help_text = capsys.readouterr().out
    assert all(reason in help_text for reason in REASONS)


def test_cli_bad_input_path_is_a_one_line_error(tmp_path, capsys):
    code = main(["sft-data", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("kiln sft-data: error: --input") and "nope" in err


def test_step_reads_the_sft_section_of_the_config(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [chat(i) for i in range(6)] + [BAD["empty_messages"]])
    config_json = json.dumps({"sft": {"val_fraction": 0.0, "min_val": 2}})
    summary = conversations_step(f"{tmp_path / 'a.jsonl'}, ", str(tmp_path / "out"), config_json)
    assert summary["kept"] == 6 and summary["val"] == 2 and summary["rejected_empty_messages"] == 1
    assert summary["digest"] == json.loads((tmp_path / "out" / "stats.json").read_text())["digest"]


def test_s3_input_and_output_against_a_real_s3_server(s3_server, tmp_path):
    bucket = os.environ["AWS_S3_BUCKET"]
    write_jsonl(tmp_path / "a.jsonl", [chat(i) for i in range(8)] + [BAD["assistant_first"]])
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(json.dumps(chat(99)).encode()))
    for name in ("a.jsonl", "b.jsonl.gz"):
        storage.upload_file(tmp_path / name, f"s3://{bucket}/chats/{name}")
    out = f"s3://{bucket}/sft/run-1"
    stats = conversations(f"s3://{bucket}/chats/", out, SFTConfig(val_fraction=0.0, min_val=2))
    assert (stats.kept, stats.train, stats.val) == (9, 7, 2)
    assert stats.rejected == {"assistant_first": 1}
    assert f"s3://{bucket}/chats/b.jsonl.gz" in stats.sources
    assert storage.is_committed(out)
    assert len(load_conversations(out, "train")) == 7 and len(load_conversations(out, "val")) == 2
    local = tmp_path / "local"
    conversations(f"s3://{bucket}/chats/", local, SFTConfig(val_fraction=0.0, min_val=2))
    assert load_conversations(local, "val") == load_conversations(out, "val")
