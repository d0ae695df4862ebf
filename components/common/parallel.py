"""Ordered parallel map over worker processes that fails loudly instead of hanging.

`multiprocessing.Pool.imap` waits forever when a worker is killed (OOM killer, signal): its task
is lost silently. `ProcessPoolExecutor` raises `BrokenProcessPool` instead, and a bounded window
of in-flight tasks keeps memory flat however long the input is. Results come back in input order,
so outputs do not depend on scheduling. Used by `kiln tokenize` and `kiln ingest`.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any


class WorkerDied(RuntimeError):
    """A worker process died (killed, out of memory) while running a task."""


def _noop() -> None:
    return None


class OrderedPool:
    """Spawned worker processes with an ordered, bounded-window `map`.

    with OrderedPool(2, initializer=init, initargs=(cfg,)) as pool:
        for result in pool.map(work, items):   # input order, ≤ 2 × workers in flight
            ...
    """

    def __init__(
        self, workers: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()
    ):
        self.workers = workers
        self.executor = ProcessPoolExecutor(
            workers, mp_context=mp.get_context("spawn"), initializer=initializer, initargs=initargs
        )

    def warm_up(self) -> None:
        """Start every worker now (in the background), e.g. while the parent does other work."""
        for _ in range(self.workers):
            self.executor.submit(_noop)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], window: int = 0) -> Iterator[Any]:
        """`fn(item)` for every item, yielded in input order; raises WorkerDied if one dies."""
        window = window or 2 * self.workers
        pending: deque = deque()
        source = iter(items)
        for item in source:
            pending.append(self.executor.submit(fn, item))
            if len(pending) >= window:
                break
        while pending:
            future = pending.popleft()
            try:
                result = future.result()
            except BrokenProcessPool as e:
                raise WorkerDied(
                    "a worker process died (killed, or out of memory) — nothing was marked "
                    "complete; rerun, or use fewer workers"
                ) from e
            nxt = next(source, _END)
            if nxt is not _END:
                pending.append(self.executor.submit(fn, nxt))
            yield result

    def __enter__(self) -> OrderedPool:
        return self

    def __exit__(self, *exc) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


_END = object()
