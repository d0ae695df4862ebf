"""What runs in each process of a Kiln TrainJob: the Trainer, joined to the others by torchrun.

The Kubeflow Trainer's torch runtime starts `torchrun` on every node (PET_NNODES, PET_NODE_RANK,
PET_MASTER_ADDR, ...), and torchrun gives its process RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR
and MASTER_PORT. `node_trainer()` reads those and the job's settings from NODE_ENV (set by
`trainjob_launch.trainjob_body`), joins the process group (NCCL on GPUs, else gloo) and runs the
same `Trainer` as a plain process or a Ray worker (`main`). Locally, one node of two:

    KILN_TRAINJOB_CONFIG="$(cat cfg.json)" KILN_TRAINJOB_TOKENS=tokens KILN_TRAINJOB_OUTPUT=out \\
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 1 --master-addr 127.0.0.1 \\
      --master-port 29500 -m kiln.components.pretrain.trainjob_node

Checkpoints go where `checkpoint_store` says (OUTPUT/checkpoints, or dist.storage_path/checkpoints),
and a node resumes from the newest one any launcher left: a re-submitted job continues the run.
This module does not import the Kubeflow SDK: only the launcher needs it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from kiln.components.common.config import from_dict
from kiln.components.common.errors import UserError
from kiln.components.common.progress import LOG_FORMAT
from kiln.components.pretrain import checkpoint_store
from kiln.components.pretrain.runtime import Runtime
from kiln.components.pretrain.train import Trainer, make_trainer

log = logging.getLogger("kiln.trainjob")
# The job's settings, as plain env values of the TrainJob (none is secret; `config` is the
# resolved config, which every checkpoint carries too).
NODE_ENV = {
    "config": "KILN_TRAINJOB_CONFIG",
    "tokens": "KILN_TRAINJOB_TOKENS",
    "output": "KILN_TRAINJOB_OUTPUT",
}


@dataclass
class TrainJobRuntime(Runtime):
    """A torchrun process: checkpoints in `save_root`, resumed from the newest in `resume_roots`."""

    save_root: str = ""
    resume_roots: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def restore(self) -> Iterator[Path | None]:
        found = checkpoint_store.newest(self.resume_roots) if self.resume else None
        if found is None:
            yield None
            return
        if self.rank == 0:
            log.info("resuming from %s (step %d)", found.uri, found.step)
        with checkpoint_store.opened(found) as directory:
            yield directory

    def save(self, step: int, writer, metrics: dict[str, float], keep: int) -> None:
        if self.rank == 0:
            where = checkpoint_store.save(self.save_root, step, writer, keep)
            log.info("checkpoint step %d: %s", step, where)


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise UserError(f"${name} is not set: run this through `trainjob_launch` or set it")
    return value


def node_runtime(storage_path: str, output_dir: str, use_gpu: bool) -> TrainJobRuntime:
    """The runtime of this process, from the env torchrun set (a lone process without it)."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if use_gpu and not torch.cuda.is_available():
        raise UserError("dist.use_gpu is set but this node has no CUDA GPU: check the TrainJob")
    device = torch.device("cuda", local_rank) if use_gpu else torch.device("cpu")
    if use_gpu:
        torch.cuda.set_device(device)
    return TrainJobRuntime(
        output_dir=Path(output_dir),
        rank=rank,
        world_size=world,
        local_rank=local_rank,
        device=device,
        save_root=checkpoint_store.own_root(storage_path, output_dir),
        resume_roots=checkpoint_store.resume_roots(storage_path, output_dir),
    )


def node_trainer() -> Trainer:
    """This process's Trainer for the run described by NODE_ENV, in the job's process group."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    cfg = from_dict(json.loads(_env(NODE_ENV["config"])))
    runtime = node_runtime(cfg.dist.storage_path, _env(NODE_ENV["output"]), cfg.dist.use_gpu)
    if runtime.world_size > 1:
        dist.init_process_group("nccl" if cfg.dist.use_gpu else "gloo")
    trainer = make_trainer(cfg, _env(NODE_ENV["tokens"]), runtime)
    host = os.environ.get("HOSTNAME", "?")
    log.info("rank %d of %d on %s (%s)", runtime.rank, runtime.world_size, host, runtime.device)
    return trainer


def main() -> None:
    """A node process's entry: train, wait for every rank, exit (1 on an error, reported).

    It ends with `os._exit` while the Trainer is still alive: freeing a DDP model can deadlock on
    the GIL with gloo's worker thread (seen with torch 2.13 on CPU: the process, and so its pod,
    would hang instead of ending).
    """
    code, trainer = 0, None  # the Trainer stays referenced until os._exit
    try:
        trainer = node_trainer()
        trainer.fit()
        if dist.is_initialized():
            dist.barrier()  # no rank leaves while another still needs it
    except BaseException:  # reported here; the process then ends with 1
        traceback.print_exc()
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
