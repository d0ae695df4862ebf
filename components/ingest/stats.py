"""Exact accounting of an ingest run: every input file and every input record is accounted for.

    documents_in = kept + Σ filtered[reason] + duplicates_exact + duplicates_near
                   + Σ unreadable[reason]

holds in total, per source (`sources`) and per file (`per_file`), with one vocabulary:
`in = kept + filtered + duplicates + unreadable`. `kept` counts distinct documents written (an
upsampled document counts once; `out` and `documents_out` count the copies). Every file found
under an input has a `per_file` entry: `"status": "read"` with those counts, or `"status":
"skipped"` with a `reason` (`unsupported extension .bz2`, `broken symlink`, ...; counted in
`skipped_files`). `check()` enforces all of it; the run fails loudly if it ever breaks.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Counters of a source and of a file: in = kept + filtered + duplicates + unreadable.
COUNTS = ("in", "kept", "filtered", "duplicates", "unreadable", "out", "bytes_in")


@dataclass
class Stats:
    """Counts, bytes and examples of one `ingest` run."""

    documents_in: int = 0
    kept: int = 0
    filtered: dict[str, int] = field(default_factory=dict)
    duplicates_exact: int = 0
    duplicates_near: int = 0
    unreadable: dict[str, int] = field(default_factory=dict)
    documents_out: int = 0
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0
    files: int = 0  # files read
    skipped_files: dict[str, int] = field(default_factory=dict)  # reason → files
    per_file: dict[str, dict] = field(default_factory=dict)
    sources: dict[str, dict] = field(default_factory=dict)
    pii_redacted: dict[str, int] = field(default_factory=dict)
    repaired: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[dict]] = field(default_factory=dict)
    seconds: float = 0.0
    config: dict = field(default_factory=dict)

    def bump(self, table: dict[str, int], key: str, n: int = 1) -> None:
        table[key] = table.get(key, 0) + n

    def source(self, name: str, weight: float) -> dict:
        """Per-source counters: in = kept + filtered + duplicates + unreadable; out counts copies."""
        return self.sources.setdefault(name, {"weight": weight, **dict.fromkeys(COUNTS, 0)})

    def read_file(self, path: str, source: str) -> dict:
        """A new per-file entry for a file that is read, with the same counters as a source."""
        self.files += 1
        entry = {"source": source, "status": "read", **dict.fromkeys(COUNTS, 0)}
        self.per_file[path] = entry
        return entry

    def skip_file(self, path: str, source: str, reason: str) -> None:
        """Record a file found under an input but not read (replacing a read entry without
        records: a file that could not be opened)."""
        old = self.per_file.get(path)
        if old is not None and old["status"] == "read":
            if old["in"]:
                raise AssertionError(f"ingest: {path} has records but is marked skipped")
            self.files -= 1
        self.per_file[path] = {"source": source, "status": "skipped", "reason": reason}
        self.bump(self.skipped_files, reason)

    def example(self, reason: str, limit: int, **info) -> None:
        items = self.examples.setdefault(reason, [])
        if len(items) < limit:
            items.append(info)

    def accounted(self) -> int:
        """The right-hand side of the accounting identity."""
        return (
            self.kept
            + sum(self.filtered.values())
            + self.duplicates_exact
            + self.duplicates_near
            + sum(self.unreadable.values())
        )

    def check(self) -> None:
        """Raise AssertionError unless every record and file is accounted for exactly once:
        in total, per source and per file; per-file sums equal the totals; every file is
        read or skipped with a reason; the splits hold the documents written."""
        for kind, table in (("source", self.sources), ("file", self.read_files())):
            for name, s in table.items():
                if s["in"] != s["kept"] + s["filtered"] + s["duplicates"] + s["unreadable"]:
                    raise AssertionError(f"ingest accounting broken for {kind} {name!r}: {s}")
        if self.accounted() != self.documents_in:
            raise AssertionError(
                f"ingest accounting broken: documents_in={self.documents_in} but "
                f"kept+filtered+duplicates+unreadable={self.accounted()}"
            )
        totals = {
            "in": self.documents_in,
            "kept": self.kept,
            "filtered": sum(self.filtered.values()),
            "duplicates": self.duplicates_exact + self.duplicates_near,
            "unreadable": sum(self.unreadable.values()),
            "out": self.documents_out,
        }
        for tables in (self.read_files(), self.sources):
            for key, total in totals.items():
                summed = sum(s[key] for s in tables.values())
                if summed != total:
                    raise AssertionError(f"ingest accounting broken: Σ {key} = {summed} != {total}")
        skipped = [f for f in self.per_file.values() if f["status"] == "skipped"]
        if len(self.read_files()) != self.files or len(skipped) != sum(self.skipped_files.values()):
            raise AssertionError(
                f"ingest file accounting broken: {self.files} read and "
                f"{sum(self.skipped_files.values())} skipped, but per_file lists "
                f"{len(self.read_files())} read and {len(skipped)} skipped"
            )
        if any(not f.get("reason") for f in skipped):
            raise AssertionError("ingest: a skipped file has no reason")
        if self.splits and sum(s["docs"] for s in self.splits.values()) != self.documents_out:
            raise AssertionError(
                f"ingest: splits hold {sum(s['docs'] for s in self.splits.values())} documents, "
                f"but {self.documents_out} were written"
            )

    def read_files(self) -> dict[str, dict]:
        """The per-file entries of files that were read."""
        return {k: v for k, v in self.per_file.items() if v["status"] == "read"}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Stats:
        return cls(**json.loads(Path(path).read_text()))

    def summary(self) -> str:
        """Human-readable report printed at the end of a run."""
        dt = max(self.seconds, 1e-9)
        lines = [
            f"ingest: {self.files} files read, {self.documents_in:,} documents in, "
            f"{self.bytes_in / 1e6:,.1f} MB in {self.seconds:.1f}s "
            f"({self.documents_in / dt:,.0f} docs/s, {self.bytes_in / 1e6 / dt:.1f} MB/s)",
        ]
        if self.skipped_files:
            lines.append(
                f"  files skipped {sum(self.skipped_files.values()):,}: "
                + _items(self.skipped_files)
            )
        lines += [
            f"  kept {self.kept:,} → {self.documents_out:,} written, "
            f"{self.bytes_out / 1e6:,.1f} MB out",
            f"  duplicates: exact {self.duplicates_exact:,}, near {self.duplicates_near:,}",
        ]
        for title, table in (("filtered", self.filtered), ("unreadable", self.unreadable)):
            if table:
                lines.append(f"  {title} {sum(table.values()):,}: {_items(table)}")
        if self.pii_redacted:
            lines.append(f"  PII redacted: {self.pii_redacted}")
        if self.repaired:
            lines.append(f"  repaired (kept): {self.repaired}")
        for name, s in sorted(self.sources.items()):
            lines.append(
                f"  source {name}: weight {s['weight']}, in {s['in']:,}, kept {s['kept']:,}, "
                f"filtered {s['filtered']:,}, duplicates {s['duplicates']:,}, "
                f"unreadable {s['unreadable']:,}, out {s['out']:,}"
            )
        for name, s in self.splits.items():
            note = f" ({s['moved_in']} moved in to keep it non-empty)" if s.get("moved_in") else ""
            lines.append(
                f"  split {name}: {s['docs']:,} documents, {s['bytes'] / 1e6:,.3f} MB of text "
                f"in {s['shards']} shard(s){note}"
            )
        lines.append(
            f"  check: {self.documents_in:,} = {self.kept:,} kept + {sum(self.filtered.values()):,} filtered + "
            f"{self.duplicates_exact + self.duplicates_near:,} duplicates + {sum(self.unreadable.values()):,} unreadable"
        )
        return "\n".join(lines)


def _items(table: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(table.items(), key=lambda x: (-x[1], x[0])))
