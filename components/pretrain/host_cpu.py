"""Keep a local Ray cluster's own processes from taking the training threads' cores.

On a machine where training takes every core, each of Ray's processes (GCS, raylet, agents, the
Train controller and its helper actors) wakes up on its own timers: about 1,100 wakeups/s on this
2-core VM, 70-80/s per Ray worker process alone (the core worker's task loop, gRPC pollers).
Each wakeup takes a core from a torch thread, and the other torch threads then wait for it at
the next OpenMP barrier. Measured here: the training threads were preempted ~1,100 times/s under
Ray against ~35 in a plain process, and Ray's processes used ~5% of each core.

Three things, all only on a cluster this process started (never on one it joined):

- `SCHED_IDLE` for Ray's threads: a wakeup no longer preempts a torch thread on the spot, and
  Ray's processes still get their CPU whenever training waits (checkpoints, start-up). Under
  Linux's EEVDF scheduler an idle-class thread still runs at the next scheduler tick, so this
  halves the preemptions (to ~600/s) rather than ending them.
- A long timer slack (`slack_for_children`) for every process the cluster starts: the kernel may
  defer their timed wakeups by up to `RAY_TIMER_SLACK_NS` and so runs many of them together, one
  interruption instead of several. That covers sleeps, polls and timed waits (gRPC's pollers,
  gloo's loop: 57 wakeups/s down to 8), not timerfd timers such as the core worker's 10 ms
  task-loop tick. Training threads set the normal slack back for themselves, before they start
  their OpenMP threads.
- Fewer timers (`ray_launch.ensure_ray`): no preemption watcher, no event-loop lag probes,
  slower metrics and resource reports, slower raylet housekeeping, log-file listing, autoscaler
  status and dashboard-agent stats, none of which a one-machine cluster needs; and three helper
  actors fewer (`ray_launch.LocalClusterTrainer`). The driver's own sweeps back off too.

A thread or process started by a SCHED_IDLE thread inherits the policy (`SCHED_RESET_ON_FORK`
does not undo it), and without CAP_SYS_NICE it cannot be undone. So the driver demotes only
processes it knows will never train (`CONTROL_PLANE`: Ray's daemons and Ray Train's helper
actors), never one by elimination: a training worker's title is `ray::execute.<fn>` while it
runs a Train setup call, and a main thread demoted then would pass SCHED_IDLE on to the training
thread it starts later. In the raylet, which starts the workers, and in the driver itself, only
Ray's library threads are demoted, by name (`RAY_LIBRARY_THREADS`: gRPC pollers, timers, io
loops). A training worker demotes its own control threads from inside the training thread,
once that thread exists (`idle_own_control_threads`). A process this module does not recognise
(a newer Ray's helper, a pooled worker) keeps its priority.

Linux only; elsewhere every function here does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger("kiln.ray")

TRAIN_WORKER = "RayTrainWorker"  # Ray Train's worker actor: its process title contains this
# Ray's processes that never run training, as their command lines say: its daemons (by path) and
# the Train controller and helper actors, one process each (by title, `ray::<Class>[.<method>]`).
CONTROL_PLANE = (
    "/gcs_server ",
    "/log_monitor.py ",
    "/autoscaler/_private/monitor.py ",
    "/dashboard/dashboard.py ",
    "ray::DashboardAgent",
    "ray::RuntimeEnvAgent",
    "ray::TrainController",
    "ray::SynchronizationActor",
    "ray::PlacementGroupCleaner",
    "ray::DatasetManager",
    "ray::_AutoscalingCoordinatorActor",
)
# Processes that start training workers (the raylet) or go on after the run (the driver, this
# process): of these only Ray's library threads are demoted, known by name (gRPC's pollers and
# timers, Ray's io loops, the object store, the memory monitor), never a thread that may spawn.
SPAWNERS = ("/raylet/raylet ",)
RAY_LIBRARY_THREADS = (
    "client.poll",
    "server.poll",
    "grpc_global_tim",
    "timer_manager",
    "nexting_thread",
    "worker.io",
    "gcs_client_io",
    "store.io",
    "MemoryMonitor",
)
# How often the driver looks for new control-plane processes and threads: every SWEEP_EVERY_S
# while it finds some, twice as long after each sweep that finds none, up to SWEEP_MAX_S. A sweep
# reads /proc for ~300 threads (~5 ms of CPU); at a fixed 2 s it was the driver's largest cost.
SWEEP_EVERY_S = 2.0
SWEEP_MAX_S = 30.0
# Threads of a training worker that move the training's own data: left at normal priority.
DATA_PLANE_THREADS = ("gloo", "pt_", "nccl", "cuda")

# Timer slack: the kernel's default (50 µs) and what a local cluster's processes get. 100 ms
# measured best of 20 and 100 ms here (Ray's own timers are 100 ms and up, its timeouts seconds).
DEFAULT_TIMER_SLACK_NS = 50_000
RAY_TIMER_SLACK_NS = 100_000_000
_PR_SET_TIMERSLACK, _PR_GET_TIMERSLACK = 29, 30

_IDLE = getattr(os, "SCHED_IDLE", None)
_IDLE_FLAGS = getattr(os, "SCHED_RESET_ON_FORK", 0)  # may be or-ed into a reported policy


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def descendants(pid: int) -> list[int]:
    """Every process below `pid` in the process tree."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        stat = _read(f"/proc/{entry.name}/stat") if entry.name.isdigit() else ""
        if stat:  # else not a process, or it exited while we looked
            tree.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        kids = tree.get(stack.pop(), [])
        found += kids
        stack += kids
    return found


def _title(pid: int) -> str:
    return _read(f"/proc/{pid}/cmdline").replace("\0", " ")


def is_ray_process(title: str) -> bool:
    """Ray's workers and actors (titled `ray::…`) and its binaries and agents (under `…/ray/`)."""
    return "ray::" in title or "/ray/" in title


def owns_ray_cluster(pid: int | None = None) -> bool:
    """Whether Ray's processes run below `pid` (default: this process), i.e. it started them."""
    return any(is_ray_process(_title(p)) for p in descendants(pid or os.getpid()))


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def _titles_below(root_pid: int) -> dict[int, str]:
    """Every process below `root_pid` with its title, a space appended (entries may end in one)."""
    return {pid: _title(pid) + " " for pid in descendants(root_pid)}


def control_plane_processes(root_pid: int, titles: dict[int, str] | None = None) -> dict[int, str]:
    """The processes below `root_pid` (`titles`, if already read) that the driver may demote,
    each with the `CONTROL_PLANE` entry it matched; no other process (see the module docstring)."""
    found = {}
    for pid, title in (_titles_below(root_pid) if titles is None else titles).items():
        if TRAIN_WORKER not in title:
            for name in CONTROL_PLANE:
                if name in title:
                    found[pid] = name.strip()
                    break
    return found


def control_plane_threads(root_pid: int, processes: dict[int, str] | None = None) -> list[int]:
    """The threads of `control_plane_processes(root_pid)` (`processes`, if already found)."""
    processes = control_plane_processes(root_pid) if processes is None else processes
    return [tid for pid in processes for tid in _threads(pid)]


def library_threads(pid: int) -> list[int]:
    """Ray's library threads in process `pid` (`RAY_LIBRARY_THREADS`)."""
    return [
        tid
        for tid in _threads(pid)
        if _read(f"/proc/{pid}/task/{tid}/comm").startswith(RAY_LIBRARY_THREADS)
    ]


def spawner_library_threads(root_pid: int, titles: dict[int, str] | None = None) -> list[int]:
    """Ray's library threads in `root_pid` itself (the driver) and in the raylets below it
    (`titles`, if already read)."""
    titles = _titles_below(root_pid) if titles is None else titles
    pids = [root_pid] + [pid for pid, title in titles.items() if any(s in title for s in SPAWNERS)]
    return [tid for pid in pids for tid in library_threads(pid)]


def own_control_threads(world_size: int) -> list[int]:
    """This training worker's control threads: the main thread (Ray's task loop) and Ray's named
    threads (gRPC, io, timers). Kept: the training thread and its OpenMP pool, which carry the
    process's own thread name, and, with more than one worker, the collective-communication
    threads (a one-worker group has no collectives, but gloo's loop still ticks)."""
    pid, caller = os.getpid(), threading.get_native_id()
    own_name = _read(f"/proc/{pid}/comm").strip()
    kept = DATA_PLANE_THREADS if world_size > 1 else ()
    picked = []
    for tid in _threads(pid):
        name = _read(f"/proc/{pid}/task/{tid}/comm").strip()
        if tid != caller and (
            tid == pid or (name and name != own_name and not name.startswith(kept))
        ):
            picked.append(tid)
    return picked


def is_idle(tid: int) -> bool:
    """Whether thread `tid` runs under SCHED_IDLE."""
    try:
        return _IDLE is not None and os.sched_getscheduler(tid) & ~_IDLE_FLAGS == _IDLE
    except OSError:
        return False


def idle(tids: Iterable[int]) -> int:
    """Give SCHED_IDLE to these threads; returns how many changed (gone ones are skipped)."""
    if _IDLE is None:
        return 0
    changed = 0
    for tid in tids:
        if is_idle(tid):
            continue
        try:
            os.sched_setscheduler(tid, _IDLE, os.sched_param(0))
            changed += 1
        except OSError:  # exited, or not ours to change
            pass
    return changed


def idle_own_control_threads(world_size: int) -> int:
    """Demote this training worker's control threads; call it from the training thread."""
    return idle(own_control_threads(world_size))


def next_sweep_in(wait_s: float, changed: bool, every_s: float, max_s: float) -> float:
    """The wait before the next sweep: `every_s` after a sweep that demoted something (a run is
    starting or restarting), else twice the last wait, at most `max_s`."""
    return every_s if changed else min(max_s, max(wait_s, every_s) * 2)


@contextlib.contextmanager
def idle_control_plane(every_s: float | None = None, max_s: float | None = None) -> Iterator[None]:
    """While the block runs, keep demoting the control plane of the Ray cluster this process
    started (processes and threads appear throughout a run: actors, helpers, gRPC threads).

    Only descendants are touched, and of the driver itself only Ray's library threads, which
    stay at idle priority after the block (they only serve Ray): a cluster this process merely
    joined is left alone. Sweeps every `every_s` (default `SWEEP_EVERY_S`) while sweeps find
    something to demote, backing off to `max_s` (default `SWEEP_MAX_S`) while they find nothing.
    """
    if _IDLE is None:
        yield
        return
    every_s = every_s or SWEEP_EVERY_S
    max_s = max(every_s, max_s or SWEEP_MAX_S)
    stop = threading.Event()

    def sweep() -> None:
        total, names, wait_s = 0, set(), every_s
        while True:
            titles = _titles_below(os.getpid())  # read once for both
            processes = control_plane_processes(os.getpid(), titles)
            changed = idle(control_plane_threads(os.getpid(), processes))
            names.update(processes.values())
            library = spawner_library_threads(os.getpid(), titles)
            changed += idle(library)
            if library:
                names.add("library threads of the driver and raylet")
            total += changed
            wait_s = next_sweep_in(wait_s, changed > 0, every_s, max_s)
            if stop.wait(wait_s):
                break
        log.debug(
            "ran %d Ray control-plane threads at idle CPU priority, in: %s",
            total,
            ", ".join(sorted(names)),
        )

    sweeper = threading.Thread(target=sweep, name="kiln-idle-ray", daemon=True)
    sweeper.start()
    try:
        yield
    finally:
        stop.set()
        sweeper.join(timeout=5)


@functools.cache
def _prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return prctl


def set_timer_slack(ns: int) -> bool:
    """Set the calling thread's timer slack (threads and processes it starts inherit it)."""
    prctl = _prctl()
    return prctl is not None and prctl(_PR_SET_TIMERSLACK, ns, 0, 0, 0) == 0


def timer_slack() -> int | None:
    """The calling thread's timer slack in ns (None off Linux)."""
    prctl = _prctl()
    return None if prctl is None else prctl(_PR_GET_TIMERSLACK, 0, 0, 0, 0)


@contextlib.contextmanager
def slack_for_children(ns: int = RAY_TIMER_SLACK_NS) -> Iterator[None]:
    """Processes and threads started inside the block get timer slack `ns`; the calling thread
    gets its own back afterwards."""
    before = timer_slack()
    changed = before is not None and set_timer_slack(ns)
    try:
        yield
    finally:
        if changed:
            set_timer_slack(before)
