"""Config sections of pretraining: model shape, data order, optimizer, training loop, parallelism."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from kiln.components.common.config.fields import Section, fail, setting

_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?([KMGTPE]i|[kMGTPEm])?$")  # e.g. 64Gi, 500M, 1.5G


@dataclass
class ModelConfig(Section):
    """Shape of the LLaMA-style decoder."""

    KEY = "model"

    vocab_size: int = setting(
        4096,
        "Vocabulary size of a model built without a tokenizer; training sizes the model from the "
        "tokenizer manifest instead (padded for fast matmuls) and records that in its checkpoints.",
        ge=1,
    )
    dim: int = setting(128, "Hidden size (d_model).", ge=1)
    n_layers: int = setting(4, "Number of transformer blocks.", ge=1)
    n_heads: int = setting(4, "Number of query heads.", ge=1)
    n_kv_heads: int = setting(
        4, "Number of key/value heads (grouped-query attention when < n_heads).", ge=1
    )
    ffn_dim: int = setting(
        0, "SwiGLU hidden size; 0 = 8/3·dim rounded up to ffn_multiple_of.", ge=0
    )
    ffn_multiple_of: int = setting(
        64, "Round the derived SwiGLU hidden size up to a multiple of this.", ge=1
    )
    max_seq_len: int = setting(
        256, "Longest context the model is built for (RoPE table size).", ge=1
    )
    rope_theta: float = setting(10000.0, "RoPE base frequency.", gt=0)
    norm_eps: float = setting(1e-5, "RMSNorm epsilon.", gt=0)
    tie_embeddings: bool = setting(
        False, "Share the token embedding and output projection weights."
    )
    mlp_act: Literal["silu", "relu2"] = setting(
        "silu",
        "Gate activation of the MLP: silu (SwiGLU, LLaMA) | relu2 (squared ReLU, as in the "
        "modded-nanogpt speedrun, here gated); both export as hidden_act for transformers.",
    )
    qk_norm: bool = setting(
        False,
        "RMSNorm over each head's queries and keys before RoPE (as Qwen3); the model then "
        "exports as Qwen3ForCausalLM, which transformers and vLLM load as is.",
    )
    dropout: float = setting(
        0.0,
        "Dropout on attention weights and on each residual branch while training (0 = off, as "
        "in LLaMA pretraining); regularizes a small corpus seen for many epochs. Inference and "
        "the exported model are unaffected.",
        ge=0,
        lt=1,
    )
    init_std: float = setting(
        0.02, "Std of the normal init; residual projections are scaled by 1/sqrt(2·n_layers).", gt=0
    )

    def check(self) -> None:
        if self.dim % self.n_heads:
            fail("model.dim", f"divisible by model.n_heads={self.n_heads}", self.dim)
        if self.n_heads % self.n_kv_heads:
            fail("model.n_heads", f"a multiple of model.n_kv_heads={self.n_kv_heads}", self.n_heads)
        if (self.dim // self.n_heads) % 2:
            fail("model.dim / model.n_heads (head dim)", "even for RoPE", self.dim // self.n_heads)


@dataclass
class DataConfig(Section):
    """Token shards and how the loader walks them."""

    KEY = "data"

    seq_len: int = setting(
        256, "Training context length in tokens (windows are seq_len + 1 long).", ge=1
    )
    shuffle: bool = setting(True, "Visit shards and windows in a seeded random order each epoch.")
    seed: int = setting(1234, "Seed of the data order (independent of the model init seed).", ge=0)


@dataclass
class OptimConfig(Section):
    """The optimizer (AdamW, or Muon for hidden matrices) and the learning-rate schedule."""

    KEY = "optim"

    name: Literal["adamw", "muon"] = setting(
        "adamw",
        "adamw | muon: Muon (torch.optim.Muon: Newton-Schulz orthogonalized momentum) for the "
        "blocks' 2-D weights, AdamW at optim.lr for embeddings, output head and norms.",
    )
    lr: float = setting(3e-4, "Peak learning rate (AdamW's; with muon, of its AdamW groups).", gt=0)
    muon_lr: float = setting(
        0.0,
        "Muon: peak learning rate of the hidden matrices, same schedule as lr; 0 = optim.lr "
        "(Muon's update is scaled to AdamW's RMS, so AdamW's learning rate carries over).",
        ge=0,
    )
    embedding_lr: float = setting(
        0.0,
        "Peak learning rate of the token embedding (AdamW; with tied embeddings also the output "
        "head), same schedule as lr; 0 = optim.lr. Each row is updated only when its token "
        "occurs, so small models learn faster with a higher one (mini: 10× lr).",
        ge=0,
    )
    muon_momentum: float = setting(0.95, "Muon: momentum (Nesterov).", ge=0, lt=1)
    min_lr_ratio: float = setting(
        0.1, "Floor of the decay, as a fraction of the peak learning rate.", ge=0, le=1
    )
    schedule: Literal["cosine", "constant", "wsd"] = setting(
        "cosine", "Schedule after warmup: cosine | constant | wsd (warmup-stable-decay)."
    )
    warmup_steps: int = setting(100, "Linear warmup steps from 0 to the peak learning rate.", ge=0)
    wsd_decay_frac: float = setting(
        0.2, "WSD: fraction of the run spent in the final linear decay.", ge=0, le=1
    )
    beta1: float = setting(0.9, "AdamW beta1.", ge=0, lt=1)
    beta2: float = setting(0.95, "AdamW beta2.", ge=0, lt=1)
    eps: float = setting(1e-8, "AdamW epsilon.", gt=0)
    weight_decay: float = setting(
        0.1, "Decoupled weight decay, applied to matrices only (not norms).", ge=0
    )
    grad_clip: float = setting(1.0, "Clip the global gradient norm to this (0 disables).", ge=0)

    def supports(self, strategy: str) -> bool:
        """Whether this optimizer trains under dist.strategy `strategy`: Muon's Newton-Schulz
        needs each whole matrix, which FSDP2 shards across ranks."""
        return not (self.name == "muon" and strategy == "fsdp")


@dataclass
class TrainConfig(Section):
    """The training loop."""

    KEY = "train"

    max_steps: int = setting(1000, "Optimizer steps to train for.", ge=1)
    stop_after_steps: int = setting(
        0,
        "Stop this invocation after N steps (0 = run to max_steps); the schedule still spans "
        "max_steps, so a later --resume continues seamlessly (time-sliced or preemptible jobs).",
        ge=0,
    )
    time_limit_s: float = setting(
        0.0,
        "Stop after this many seconds since the training process started (start-up included), "
        "with a final validation and checkpoint, when the next step would not fit (0 = off); "
        "for fixed wall-clock budgets and time slots. The schedule still spans max_steps.",
        ge=0,
    )
    fit_to_time_limit: bool = setting(
        False,
        "With train.time_limit_s: at the end of warmup, and again where wsd's decay starts "
        "(other schedules: halfway), set max_steps to the steps that fit the limit at the pace "
        "(validations and the final save included), so the schedule, its decay included, ends "
        "in time; never above the configured max_steps. The fitted length is checkpointed and "
        "kept on resume. For a one-run budget, not for time slots.",
    )
    micro_batch_size: int = setting(8, "Sequences per worker per forward/backward pass.", ge=1)
    tokens_per_step: int = setting(
        0,
        "Global tokens per optimizer step; 0 = one micro-batch per worker. Must be a multiple of "
        "micro_batch_size·seq_len·workers (gradient accumulation makes up the rest).",
        ge=0,
    )
    seed: int = setting(1337, "Seed for model init and any sampling.", ge=0)
    dtype: Literal["auto", "bf16", "fp32"] = setting(
        "auto", "Compute dtype: auto (bf16 autocast on GPU, fp32 on CPU) | bf16 | fp32."
    )
    compile: bool = setting(False, "Compile the model with torch.compile.")
    activation_checkpointing: bool = setting(
        False,
        "Recompute each block's activations in the backward pass instead of storing them: "
        "activation memory drops to about one block's worth plus each block's input, for about "
        "a third more compute (see `kiln plan`).",
    )
    log_every: int = setting(10, "Print and track metrics every N steps.", ge=1)
    eval_every: int = setting(200, "Validation loss every N steps (0 = only at the end).", ge=0)
    eval_batches: int = setting(20, "Micro-batches per validation pass.", ge=1)
    sample_every: int = setting(
        0, "Generate samples from sample_prompts every N steps (0 = only at the end).", ge=0
    )
    sample_prompts: list[str] = setting(
        ["The ", "Once upon a time"], "Fixed prompts for progress samples."
    )
    sample_tokens: int = setting(48, "Tokens generated per sample.", ge=0)
    ckpt_every: int = setting(200, "Save a checkpoint every N steps (and always at the end).", ge=1)
    keep_checkpoints: int = setting(3, "Keep only the last K checkpoints.", ge=1)
    max_nonfinite_in_a_row: int = setting(
        5, "Halt after this many consecutive steps with NaN/inf loss or gradients.", ge=1
    )
    spike_factor: float = setting(
        0.0,
        "Loss-spike policy: roll back to the last checkpoint when loss > factor × its running "
        "mean (0 disables; otherwise > 1).",
        ge=0,
    )
    max_rollbacks: int = setting(3, "Halt after this many loss-spike rollbacks.", ge=0)

    def check(self) -> None:
        if self.fit_to_time_limit and not self.time_limit_s:
            fail("train.time_limit_s", "> 0 with train.fit_to_time_limit=true", self.time_limit_s)
        if 0 < self.spike_factor <= 1:
            fail("train.spike_factor", "0 (off) or > 1 (a loss above its mean)", self.spike_factor)


@dataclass
class DistConfig(Section):
    """Where and how training runs."""

    KEY = "dist"

    workers: int = setting(
        0,
        "Ray Train workers, or TrainJob nodes (dist.launcher=trainjob, 0 = 1); 0 = one plain "
        "process without Ray.",
        ge=0,
    )
    launcher: Literal["ray", "trainjob"] = setting(
        "ray",
        "What runs the workers: ray (Ray Train: a local Ray, or the cluster in ray_address) | "
        "trainjob (a Kubeflow Trainer v2 TrainJob on the cluster of the current Kubernetes "
        "config: one torchrun process per node; docs/platform.md).",
    )
    use_gpu: bool = setting(False, "One GPU per Ray worker (NCCL) instead of CPU workers (gloo).")
    strategy: Literal["ddp", "fsdp"] = setting(
        "ddp", "Data parallelism: ddp | fsdp (FSDP2, shards params, grads and optimizer state)."
    )
    cpus_per_worker: int = setting(
        0,
        "CPUs reserved per Ray worker (each worker's torch threads); 0 = on a local cluster the "
        "machine's CPUs split evenly among the workers, on an existing cluster 1.",
        ge=0,
    )
    max_failures: int = setting(
        2,
        "Restart training from the last checkpoint up to this many times after a worker dies "
        "(-1 = without limit).",
        ge=-1,
    )
    storage_path: str = setting(
        "",
        "Checkpoint storage for Ray Train: local dir or s3://bucket/prefix (default: OUTPUT/ray).",
    )
    ray_address: str = setting(
        "",
        "Ray cluster: '' starts a local one; ray://… or auto to join; http://HOST:8265 submits a job.",
    )
    memory_per_worker: str = setting(
        "",
        "TrainJob: memory per node, a Kubernetes quantity such as 64Gi ('' = the runtime's); Ray "
        "workers get what their RayCluster pods have.",
    )

    def check(self) -> None:
        if self.ray_address != self.ray_address.strip() or " " in self.ray_address:
            fail("dist.ray_address", "an address without spaces", self.ray_address)
        if self.launcher == "trainjob" and self.ray_address:
            fail("dist.ray_address", "'' with dist.launcher=trainjob (no Ray)", self.ray_address)
        if self.memory_per_worker and not _QUANTITY.match(self.memory_per_worker):
            fail(
                "dist.memory_per_worker", "a Kubernetes quantity like 64Gi", self.memory_per_worker
            )
