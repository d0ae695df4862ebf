"""Run two training programs side by side in alternating time slices, so a shared VM's drift lands on both.

On this 2-core VM a run's speed drifts by ±15% over tens of seconds, more than the differences a
throughput benchmark is after, so runs that follow each other are not comparable. Here both
programs start, each is paused (SIGSTOP, with every process below it) while the other runs, and
they swap every `slice_s` seconds until both finish. Each program's speed is the median of its own
per-step times: the one step per slice that spans a pause is an outlier the median ignores.
Only steps taken while both programs ran count: the one that finishes last runs its remaining
steps alone, in a later stretch of the VM's drift that the other never saw.

    a = Lane("nanoGPT", cmd, ready=..., step_seconds=...)
    b = Lane("kiln", cmd, ready=..., step_seconds=...)
    alternate(a, b)  # then a.tokens_per_second(768), b.tokens_per_second(768)
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass
class Lane:
    name: str
    cmd: list[str]
    ready: Callable[[], bool]  # training has started (its first step is logged)
    step_seconds: Callable[[], list[float]]  # per-step wall-clock times, in order
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    log: Path | None = None  # stdout and stderr go here
    proc: subprocess.Popen | None = None
    # Steps logged while the other program still ran (set for the one that finishes last).
    shared_steps: int | None = None

    def start(self) -> None:
        out = open(self.log, "w") if self.log else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = subprocess.Popen(
            self.cmd, cwd=self.cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )

    def signal(self, sig: int) -> None:
        try:
            below = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            below = []
        for pid in [self.proc.pid, *(p.pid for p in below)]:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        if self.proc.returncode:
            tail = self.log.read_text()[-3000:] if self.log else ""
            raise RuntimeError(f"{self.name} failed ({self.proc.returncode}):\n{tail}")

    def tokens_per_second(self, tokens_per_step: int, skip: int = 10) -> float:
        times = self.step_seconds()[: self.shared_steps][skip:]
        if not times:
            raise RuntimeError(f"{self.name} logged no steps after the first {skip}")
        return tokens_per_step / statistics.median(times)


def _wait_ready(lane: Lane, timeout: float) -> None:
    deadline = time.time() + timeout
    while lane.running and not lane.ready():
        if time.time() > deadline:
            raise TimeoutError(f"{lane.name} did not start training within {timeout:.0f}s")
        time.sleep(0.05)


def alternate(a: Lane, b: Lane, slice_s: float = 1.0, timeout: float = 3600) -> None:
    """Start `a` and let it reach its first step, pause it, do the same with `b`, then give each
    the machine for `slice_s` in turn until both exit. Raises if either fails."""
    try:
        a.start()
        _wait_ready(a, timeout)
        a.signal(signal.SIGSTOP)
        b.start()
        _wait_ready(b, timeout)
        lanes, turn, deadline = [a, b], 0, time.time() + timeout
        while any(lane.running for lane in lanes):
            if time.time() > deadline:
                raise TimeoutError(f"{a.name} and {b.name} did not finish in {timeout:.0f}s")
            if not all(lane.running for lane in lanes):
                for lane in lanes:  # the other finished: what comes next runs alone
                    if lane.running and lane.shared_steps is None:
                        lane.shared_steps = len(lane.step_seconds())
            on, off = lanes[turn], lanes[1 - turn]
            if off.running:
                off.signal(signal.SIGSTOP)
            if on.running:
                on.signal(signal.SIGCONT)
                on_end = time.time() + slice_s
                while on.running and time.time() < on_end:
                    time.sleep(0.01)
            turn = 1 - turn
    finally:
        for lane in (a, b):
            if lane.running:
                lane.signal(signal.SIGCONT)
                lane.signal(signal.SIGKILL)
                lane.proc.wait()
    a.check()
    b.check()
