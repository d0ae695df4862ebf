"""The record every ingest step works on, and the ways a record can fail to be one."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Document:
    """One document: `id` (unique per corpus), `text`, `source` (input name for mixing)."""

    id: str
    text: str
    source: str
    file: str = ""
    line: int = 0
    meta: dict = field(default_factory=dict)


@dataclass
class Problem:
    """Input that could not become a document; counted under `unreadable[kind]` with its place."""

    kind: str
    file: str
    line: int
    detail: str = ""


class ReadError(Exception):
    """A whole input (or the rest of it) cannot be read; `kind` names the reason."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail
