"""Where a worker's model and data live: the tokenized dataset as a local directory (S3 inputs
cached per node), the model shape sized from its vocabulary, and data parallelism (DDP or FSDP2)
applied from outside the model when a process group exists.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import torch
import torch.distributed as dist

from kiln.components.common.config import Config, ModelConfig
from kiln.components.pretrain.model import Llama
from kiln.components.pretrain.runtime import Runtime
from kiln.components.tokenization.manifest import read_manifest

log = logging.getLogger("kiln.train")


def _round_up(n: int, multiple: int) -> int:
    return multiple * math.ceil(n / multiple)


def local_tokens(tokens_dir: str | Path, runtime: Runtime) -> Path:
    """The tokenized dataset as a local directory: `s3://` inputs are downloaded (sha256-verified)
    once per node into a cache, by the node's first worker while the others wait."""
    uri = str(tokens_dir)
    if not uri.startswith("s3://"):
        return Path(tokens_dir)
    import hashlib
    import os

    from kiln.components.common import storage  # only S3 inputs need the storage layer

    cache_root = Path(os.environ.get("KILN_CACHE_DIR", Path.home() / ".cache" / "kiln"))
    local = cache_root / "tokens" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    if runtime.local_rank == 0 and not (local / "manifest.json").exists():
        log.info("downloading %s to %s", uri, local)
        partial = local.with_name(f".{local.name}.partial-{os.getpid()}")
        storage.download_dir(uri, partial, verify=True)
        os.replace(partial, local)  # a cache entry is complete or absent
    if runtime.world_size > 1:
        dist.barrier()
    return local


def padded_vocab(tokens: int) -> int:
    """The model's vocabulary for a tokenizer of `tokens` ids, padded for fast matmuls."""
    # Multiples of 64 keep large output matmuls fast; a tiny vocabulary only needs 8 (padding
    # 65 character ids to 128 would double the output layer for nothing).
    return _round_up(tokens, 64 if tokens >= 1024 else 8)


def model_shape(cfg: ModelConfig, tokens_dir: str | Path) -> ModelConfig:
    """The model to build: `cfg` with the vocabulary sized from the tokenized data (padded for
    fast matmuls). A new ModelConfig: the run's config keeps what the user set."""
    return dataclasses.replace(cfg, vocab_size=padded_vocab(read_manifest(tokens_dir).vocab_size))


def parallelize(model: Llama, cfg: Config, device: torch.device) -> torch.nn.Module:
    """Wrap for data parallelism when a process group exists; returns the module to call forward on."""
    if cfg.train.compile:
        model.compile()  # in place: state-dict keys stay free of `_orig_mod.`
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return model
    if cfg.dist.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.layers:
            fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def local_param_count(model: torch.nn.Module) -> int:
    """Parameter elements this rank holds: all of them, or its shards under FSDP."""
    return sum(
        p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in model.parameters()
    )
