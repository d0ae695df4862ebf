"""Exact accounting of an ingest run: every input record ends in exactly one bucket.

    documents_in = kept + Σ filtered[reason] + duplicates_exact + duplicates_near
                   + Σ unreadable[reason]

`kept` counts distinct documents written (an upsampled document counts once; `documents_out`
counts the copies). `check()` enforces the identity; the run fails loudly if it ever breaks.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


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
    files: int = 0
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
        keys = ("in", "kept", "filtered", "duplicates", "unreadable", "out", "bytes_in")
        return self.sources.setdefault(name, {"weight": weight, **dict.fromkeys(keys, 0)})

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
        """Raise if the accounting identity fails, overall or for any source."""
        for name, s in self.sources.items():
            if s["in"] != s["kept"] + s["filtered"] + s["duplicates"] + s["unreadable"]:
                raise AssertionError(f"ingest accounting broken for source {name!r}: {s}")
        if self.accounted() != self.documents_in:
            raise AssertionError(
                f"ingest accounting broken: documents_in={self.documents_in} but "
                f"kept+filtered+duplicates+unreadable={self.accounted()}"
            )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Stats:
        return cls(**json.loads(Path(path).read_text()))

    def summary(self) -> str:
        """Human-readable report printed at the end of a run."""
        dt = max(self.seconds, 1e-9)
        splits = ", ".join(f"{k} {v['docs']:,}" for k, v in self.splits.items())
        lines = [
            f"ingest: {self.files} files, {self.documents_in:,} documents in, "
            f"{self.bytes_in / 1e6:,.1f} MB in {self.seconds:.1f}s "
            f"({self.documents_in / dt:,.0f} docs/s, {self.bytes_in / 1e6 / dt:.1f} MB/s)",
            f"  kept {self.kept:,} → {self.documents_out:,} written "
            f"({splits}), "
            f"{self.bytes_out / 1e6:,.1f} MB out",
            f"  duplicates: exact {self.duplicates_exact:,}, near {self.duplicates_near:,}",
        ]
        for title, table in (("filtered", self.filtered), ("unreadable", self.unreadable)):
            if table:
                items = ", ".join(
                    f"{k} {v:,}" for k, v in sorted(table.items(), key=lambda x: -x[1])
                )
                lines.append(f"  {title} {sum(table.values()):,}: {items}")
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
        lines.append(
            f"  check: {self.documents_in:,} = {self.kept:,} kept + {sum(self.filtered.values()):,} filtered + "
            f"{self.duplicates_exact + self.duplicates_near:,} duplicates + {sum(self.unreadable.values()):,} unreadable"
        )
        return "\n".join(lines)
