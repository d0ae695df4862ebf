"""Ingest on a Ray cluster: the same per-file steps as Ray tasks, the same ordered global replay.

    kiln ingest --input s3://corpus/web/ --output out --set ingest.ray_address=auto

Each input file becomes one Ray task running `steps.FileSteps` (read → normalize → language →
filters → PII → exact key + MinHash); its spill comes back through the object store and the
driver replays the files in input order for global dedup, sampling, split and writing — so the
output is byte-identical to a local run. At most `2 × cluster CPUs` tasks are in flight, which
bounds the driver's memory to that many spills. Inputs must be readable from every node (s3://,
hf://, or a shared filesystem). The dedup index stays on the driver; beyond one machine's memory
the next step is a band-keyed shuffle (see docs/data.md).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from kiln.components.common.config import IngestConfig
from kiln.components.ingest.events import FileCounters, FileResult, FileTask
from kiln.components.ingest.steps import FileSteps


def _process(steps: FileSteps, task: FileTask) -> tuple[bytes, FileCounters]:
    local = Path(os.environ.get("TMPDIR", "/tmp")) / f"kiln-spill-{os.getpid()}.pkl"
    try:
        result = steps(task._replace(spill=str(local)))
        return local.read_bytes(), result.counters
    finally:
        local.unlink(missing_ok=True)


def ray_results(tasks: list[FileTask], cfg: IngestConfig) -> Iterator[FileResult]:
    """A `FileResult` per task, in task order, computed by Ray tasks."""
    import ray

    if not ray.is_initialized():
        # "local" starts a fresh private cluster (never joins one found on the machine)
        ray.init(address=cfg.ray_address, include_dashboard=False, log_to_driver=False)
    remote = ray.remote(num_cpus=1)(_process)
    steps_ref = ray.put(FileSteps(cfg))
    window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    pending: deque = deque()
    queue = iter(tasks)
    for task in queue:
        pending.append((task, remote.remote(steps_ref, task)))
        if len(pending) >= window:
            break
    while pending:
        task, ref = pending.popleft()
        data, counters = ray.get(ref)
        Path(task.spill).write_bytes(data)
        nxt = next(queue, None)
        if nxt is not None:
            pending.append((nxt, remote.remote(steps_ref, nxt)))
        yield FileResult(task.spill, counters)
