"""What `kiln run` shows while the pipeline runs: step by step, not KFP's full executor dump.

The KFP local runner prints every step's executor input and output JSON (hundreds of lines per
run). `RunConsole` is a text stream that takes all of it: everything goes to the log file, and the
terminal gets one line per step start and end, the training progress lines, Kiln's own INFO
lines and every warning; a failed step also gets the last lines of its log (its traceback).

    with RunConsole("kiln-work/kiln-run.log") as console, contextlib.redirect_stdout(console):
        pipeline(...)

At the end `registration_line` says which alias the new version got and which rule decided.
"""

from __future__ import annotations

import collections
import io
import re
import sys
import time
from pathlib import Path
from typing import TextIO

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # KFP colours task names and statuses
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_PROGRESS = re.compile(r"(step \d+/\d+ \|.*|step \d+: val loss.*|sample @\d+:.*)$")
_EXECUTOR = re.compile(r"\[KFP Executor [^\]]* (INFO|WARNING|ERROR)\]: (.*)$")
# A Kiln logger's record from a training process (Ray Train worker, TrainJob node), after the
# worker's prefix and a timestamp: "(RayTrainWorker pid=7) 2026-… WARNING kiln.train: …".
_KILN_RECORD = re.compile(r"\b(WARNING|ERROR) kiln[\w.]*: (.*)$")
_WARNING = re.compile(r"\b(WARNING|ERROR)\b")
# Executor bookkeeping that says nothing about the run itself.
_NOISE = (
    "Wrote executor output",
    "Looking for component",
    "Loading KFP component",
    "executor_input",
)


# publish's champion rules (`publish.track.decide_champion`), as the summary names them
_RULES = {
    "unigram baseline": "the first-champion rule (no champion yet: beat the unigram baseline)",
    "champion comparison": "the champion rule (beat the champion on the same validation set)",
    "eval gate": "the eval gate",
    "publish.promote": "publish.promote",
}


def registration_line(registered: dict, champion: dict) -> str:
    """One line on the registered version: its aliases, whether it is the champion, and the
    rule that decided with that rule's reason."""
    aliases = ", ".join(registered.get("aliases") or []) or "-"
    head = f"{registered.get('name')} version {registered.get('version')} (aliases: {aliases})"
    is_champion = "champion" in (registered.get("aliases") or [])
    verdict = "champion" if is_champion else "candidate only, not champion"
    rule = champion.get("rule")
    by = f", by {_RULES.get(rule, rule)}" if rule else ""
    reason = champion.get("reason")
    return f"{head}: {verdict}{by}" + (f": {reason}" if reason else "")


def strip_ansi(text: str) -> str:
    """`text` without terminal colour codes."""
    return _ANSI.sub("", text)


class RunConsole(io.TextIOBase):
    def __init__(self, log_path: str | Path, out: TextIO | None = None, tail: int = 40):
        self.path = Path(log_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.path, "w", encoding="utf-8")
        self.out = out or sys.stdout
        self.pending = ""
        self.step_lines: collections.deque[str] = collections.deque(maxlen=tail)
        self.started: dict[str, float] = {}

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.log.closed:  # a logging handler that outlived the run: plain pass-through
            return self.out.write(text)
        self.log.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self._show(line)
        return len(text)

    def flush(self) -> None:
        if not self.log.closed:
            self.log.flush()
        self.out.flush()

    def close(self) -> None:
        """Close the log file; the stream itself stays usable (it then writes straight through)."""
        if self.pending:
            self._show(self.pending)
            self.pending = ""
        self.log.close()

    def _print(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def _show(self, line: str) -> None:
        line = strip_ansi(line).rstrip()
        if not line.strip():
            return
        self.step_lines.append(line)
        if m := _START.search(line):
            self.started[m[1]] = time.monotonic()
            self.step_lines.clear()
            self._print(f"▶ {m[1]}")
        elif m := _END.search(line):
            seconds = time.monotonic() - self.started.get(m[1], time.monotonic())
            if m[2] == "SUCCESS":
                self._print(f"✓ {m[1]} ({seconds:.1f}s)")
            else:
                self._print(f"✗ {m[1]} {m[2]} after {seconds:.1f}s; the end of its log:")
                for kept in list(self.step_lines)[:-1]:
                    self._print(f"    {kept.strip()}")
                self._print(f"  (full log: {self.path})")
        elif m := _PROGRESS.search(line):
            self._print(f"    {m[1]}")
        elif m := _EXECUTOR.search(line):
            if not any(noise in m[2] for noise in _NOISE):
                self._print(f"    {m[2] if m[1] == 'INFO' else m[1] + ': ' + m[2]}")
        elif m := _KILN_RECORD.search(line):
            self._print(f"    {m[1]}: {m[2]}")
        elif _WARNING.search(line) and "Pipeline" not in line:
            self._print(f"    {line.strip()}")
