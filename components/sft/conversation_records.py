"""Conversation records: input files → records → validated, normalized messages (or a Reject).

    files = plan(["chats/", "s3://bucket/more/*.jsonl.gz"])    # UserError for an empty input
    for record in read_records(files.files[0]):
        messages = to_messages(record.value, cfg.sft)           # list of messages, or a Reject

Used by `conversations.py` (`kiln sft-data`). Inputs are files, directories, globs and s3://
prefixes, listed as `kiln ingest` lists them; `.jsonl` holds a record per line, `.json` a list
of records (or one), each optionally .gz/.zst; UTF-16/32 with a byte-order mark is transcoded.
A record is `{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}` (other
keys ignored) or `{"prompt": str, "completion": str}` (a user and an assistant message). Content
is NFC-normalized with CRLF → LF and nothing else. Bad data never raises: it is a `Reject` with
a stable code from `REASONS`; a file that cannot be opened or decompressed is one
`unreadable_file` record.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterator
from typing import Any, NamedTuple

from kiln.components.common.config import SFTConfig
from kiln.components.common.errors import UserError
from kiln.components.ingest.document import ReadError
from kiln.components.ingest.encoding import TextStream
from kiln.components.ingest.readers import JSON, JSONL, file_format, scan
from kiln.components.ingest.streams import iter_chunks, iter_lines, read_bounded

ROLES = ("system", "user", "assistant")
REASONS = {
    "invalid_json": "a line (or .json file) that is not JSON in valid UTF-8/Unicode",
    "not_an_object": "a record or a message that is not a JSON object",
    "missing_messages": "no 'messages' list and no 'prompt' + 'completion'",
    "empty_messages": "'messages' is an empty list",
    "bad_role": "a role other than system, user or assistant",
    "non_string_content": "a content, prompt or completion that is not a string",
    "empty_content": "an empty or whitespace-only message",
    "assistant_first": "the first message after the system message is not from the user",
    "system_not_first": "a system message that is not the first message",
    "roles_not_alternating": "roles after the system message not user, assistant, user, ...",
    "no_assistant_reply": "the conversation does not end with an assistant message",
    "message_too_long": "a message over sft.max_message_chars characters (or a 64 MiB line)",
    "unreadable_file": "a file that cannot be opened, decoded or decompressed (one record)",
}
MAX_LINE_BYTES = 64 << 20
MAX_JSON_BYTES = 2 << 30  # a .json file is parsed whole; larger ones should be .jsonl
MAX_FILE_BYTES = 1 << 50  # .jsonl is streamed: no real cap on its decompressed size
_SURROGATE = re.compile("[\ud800-\udfff]")  # valid in JSON escapes, not encodable as UTF-8

Message = dict[str, str]


class Reject(NamedTuple):
    """Why a record is not a conversation: a code from `REASONS` and the specifics."""

    reason: str
    detail: str


class InputFile(NamedTuple):
    """A file to read, or one that cannot be opened (then one `unreadable_file` record)."""

    path: str
    unreadable: str = ""


class Plan(NamedTuple):
    """Files in input then name order (each once), and files skipped as not conversations."""

    files: list[InputFile]
    skipped: dict[str, str]


class Record(NamedTuple):
    """One record read: where it is, its text (for excerpts) and its JSON value or Reject."""

    file: str
    line: int
    text: str | None
    value: Any


def to_messages(obj: object, cfg: SFTConfig) -> list[Message] | Reject:
    """A record's normalized messages (system prompt added per `cfg`), or why it has none."""
    if not isinstance(obj, dict):
        return Reject("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    if "messages" in obj:
        raw = obj["messages"]
        if not isinstance(raw, list):
            return Reject("missing_messages", f"'messages' is {type(raw).__name__}, not a list")
    elif "prompt" in obj and "completion" in obj:
        raw = [
            {"role": "user", "content": obj["prompt"]},
            {"role": "assistant", "content": obj["completion"]},
        ]
    else:
        return Reject("missing_messages", "no 'messages' and no 'prompt' + 'completion'")
    if not raw:
        return Reject("empty_messages", "'messages' is []")
    messages = []
    for i, m in enumerate(raw, 1):
        if not isinstance(m, dict):
            return Reject("not_an_object", f"message {i} is {type(m).__name__}, not an object")
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or role not in ROLES:
            return Reject("bad_role", f"message {i} has role {role!r}")
        if not isinstance(content, str):
            return Reject("non_string_content", f"message {i} content is {type(content).__name__}")
        if _SURROGATE.search(content):
            return Reject("invalid_json", f"message {i} has a lone UTF-16 surrogate escape")
        content = unicodedata.normalize("NFC", content.replace("\r\n", "\n"))
        if not content.strip():
            return Reject("empty_content", f"message {i} ({role}) is empty")
        if len(content) > cfg.max_message_chars:
            return Reject(
                "message_too_long",
                f"message {i} has {len(content):,} chars > sft.max_message_chars="
                f"{cfg.max_message_chars:,}",
            )
        messages.append({"role": role, "content": content})
    problem = _check_turns([m["role"] for m in messages])
    if problem:
        return problem
    if cfg.system_prompt and messages[0]["role"] != "system":
        system = unicodedata.normalize("NFC", cfg.system_prompt.replace("\r\n", "\n"))
        messages.insert(0, {"role": "system", "content": system})
    return messages


def _check_turns(roles: list[str]) -> Reject | None:
    """Why the order of roles is not [system], user, assistant, ..., assistant (or None)."""
    if "system" in roles[1:]:
        return Reject("system_not_first", f"message {roles.index('system', 1) + 1} is system")
    first = 1 if roles[0] == "system" else 0
    turns = roles[first:]
    if turns and turns[0] == "assistant":
        return Reject("assistant_first", f"message {first + 1} is assistant, expected user")
    for i, role in enumerate(turns):
        if role != ("user", "assistant")[i % 2]:
            return Reject("roles_not_alternating", f"message {first + i + 1} is another {role}")
    if not turns or turns[-1] != "assistant":
        return Reject("no_assistant_reply", "the last message is not from the assistant")
    return None


def conversation_hash(messages: list[Message]) -> bytes:
    """sha256 of the canonical JSON of the messages: the key of dedup and of the split."""
    canon = json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).digest()


def plan(inputs: list[str]) -> Plan:
    """The .jsonl/.json files the inputs name; UserError for an input that names none.

    Files that `scan` finds but cannot open (a broken symlink, no permission) are read as one
    `unreadable_file` record each; files of other formats are listed in `skipped`.
    """
    if not inputs:
        raise UserError("no input given; pass files, directories, globs or s3://")
    files: list[InputFile] = []
    skipped: dict[str, str] = {}
    seen: set[str] = set()
    for arg in inputs:
        found = scan(arg)
        ours = [InputFile(f) for f in found.files if _ours(f)]
        ours += [InputFile(s.path, s.reason) for s in found.skipped if _ours(s.path)]
        skipped.update((f, "not .jsonl or .json") for f in found.files if not _ours(f))
        skipped.update((s.path, s.reason) for s in found.skipped if not _ours(s.path))
        if not ours:
            others = len(found.files) + len(found.skipped)
            there = f"; found {others} other files" if others else " (no such path or prefix)"
            raise UserError(
                f"--input {arg} names no .jsonl or .json file{there}; expected files, "
                "directories, globs or s3:// prefixes of .jsonl/.json, optionally .gz/.zst"
            )
        # A file named by two inputs is read once, under the first (a second read is all dups).
        files += sorted(f for f in ours if f.path not in seen)
        seen.update(f.path for f in ours)
    return Plan(files, skipped)


def _ours(path: str) -> bool:
    return file_format(path) in (JSONL, JSON)


def read_records(file: InputFile) -> Iterator[Record]:
    """Every record of a file; unreadable data ends it with one `unreadable_file` Reject."""
    if file.unreadable:
        yield Record(file.path, 0, None, Reject("unreadable_file", file.unreadable))
        return
    line = 0
    try:
        chunks = TextStream(replace=False)(iter_chunks(file.path, MAX_FILE_BYTES))
        if file_format(file.path) == JSONL:
            for line, raw in iter_lines(chunks, MAX_LINE_BYTES):
                if raw is None:
                    too_long = Reject("message_too_long", f"line over {MAX_LINE_BYTES:,} bytes")
                    yield Record(file.path, line, None, too_long)
                elif raw.strip():  # blank lines separate, they are not records
                    yield _parse(file.path, line, raw)
            return
        data = read_bounded(chunks, MAX_JSON_BYTES)
        if data is None:
            yield Record(file.path, 0, None, Reject("unreadable_file", "over 2 GiB; use .jsonl"))
            return
        whole = _parse(file.path, 1, data)
        if not isinstance(whole.value, list):
            yield whole
            return
        for i, item in enumerate(whole.value, 1):  # `line` is the item's number in the list
            yield Record(file.path, i, None, item)
    except ReadError as e:
        yield Record(file.path, line, None, Reject("unreadable_file", f"{e.kind}: {e.detail}"))


def _parse(path: str, line: int, raw: bytes) -> Record:
    """A line (or a whole .json file) → its JSON value, or an `invalid_json` Reject."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        lossy = raw.decode("utf-8-sig", errors="replace")
        return Record(path, line, lossy, Reject("invalid_json", f"not valid UTF-8 ({e.reason})"))
    try:
        return Record(path, line, text, json.loads(text))
    except (json.JSONDecodeError, RecursionError) as e:  # RecursionError: absurdly deep nesting
        where = e.lineno if isinstance(e, json.JSONDecodeError) and line == 1 else line
        return Record(path, where, text, Reject("invalid_json", str(e)[:200]))
