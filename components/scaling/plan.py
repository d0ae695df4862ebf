"""Pre-flight arithmetic for a training config: parameters, FLOPs, memory per GPU, time and cost.

    plan = make_plan(cfg, gpus=8, gpu="h100", mfu=0.4, usd_per_gpu_hour=2.5)
    plan.params.total, plan.train_flops, plan.hours, plan.memory["fsdp"].total

Every figure follows Kiln's own model and training loop, so a plan matches what a run reports:
- Parameters are counted from the shape the way `Llama` builds it (fused q/k/v and gate/up, no
  biases, RMSNorm weights including QK-norm's, an output head unless embeddings are tied).
- Training FLOPs per token are the MFU meter's (PaLM appendix B): 6·N + 12·L·H·Q·T, where N
  excludes the embedding lookup (a tied table counts once, as the output head).
- Training state is 16 bytes per parameter: fp32 weights (4), fp32 gradients (4) and AdamW's two
  fp32 moments (8); with `optim.name=muon` the blocks' matrices keep one momentum buffer (4)
  instead, 12 bytes. bf16 autocast adds a 2-byte copy of every matmul weight. DDP keeps all of
  it on every GPU; FSDP2 shards it over the GPUs and gathers two blocks' weights at a time.
- Activations are the bytes autograd saves for backward in Kiln's block (`activation_bytes`); the
  formula equals what the model saves on CPU (tests/scaling/test_plan.py measures it). GPU
  kernels that fuse RMSNorm save slightly less, so on GPU it is an upper estimate.
- A GPU "fits" when the estimate stays under `HEADROOM` of its memory (the CUDA context, NCCL
  buffers and allocator fragmentation take the rest).
- Time = FLOPs / (GPUs × dense bf16 peak × MFU); compute-optimal tokens are Chinchilla's ≈ 20 per
  parameter (Hoffmann et al. 2022).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field

from kiln.components.common.config import Config, ModelConfig
from kiln.components.common.gpus import GPU, gpu_type

HEADROOM = 0.9  # share of a GPU's memory a plan may use
CHINCHILLA_TOKENS_PER_PARAM = 20.0
MAX_GPUS = 4096


def ffn_hidden(cfg: ModelConfig) -> int:
    """SwiGLU hidden size, as the model derives it (explicit, or 8/3·dim rounded up)."""
    if cfg.ffn_dim:
        return cfg.ffn_dim
    return cfg.ffn_multiple_of * math.ceil(int(8 * cfg.dim / 3) / cfg.ffn_multiple_of)


@dataclass(frozen=True)
class ParamCount:
    """Parameters of a `Llama` of this shape, by part."""

    embedding: int  # token embedding table (also the output head when tied)
    attention: int  # q/k/v and output projections, all layers
    mlp: int  # gate/up and down projections, all layers
    norms: int  # RMSNorm weights
    head: int  # output projection; 0 when tied to the embedding

    @property
    def total(self) -> int:
        return self.embedding + self.attention + self.mlp + self.norms + self.head

    @property
    def non_embedding(self) -> int:
        """What FLOPs are counted over: all but a lookup-only embedding table."""
        return self.total - (self.embedding if self.head else 0)

    @property
    def per_layer(self) -> int:
        return (self.attention + self.mlp) // self.layers + 2 * self.dim

    # Filled in by count_params; kept off the reported fields.
    layers: int = field(default=1, repr=False)
    dim: int = field(default=0, repr=False)


def count_params(cfg: ModelConfig) -> ParamCount:
    """Parameters of `Llama(cfg)`, by part, without building it."""
    d, hd = cfg.dim, cfg.dim // cfg.n_heads
    attention = d * (cfg.n_heads + 2 * cfg.n_kv_heads) * hd + cfg.n_heads * hd * d
    mlp = 3 * d * ffn_hidden(cfg)
    return ParamCount(
        embedding=cfg.vocab_size * d,
        attention=cfg.n_layers * attention,
        mlp=cfg.n_layers * mlp,
        norms=(2 * cfg.n_layers + 1) * d + (2 * cfg.n_layers * hd if cfg.qk_norm else 0),
        head=0 if cfg.tie_embeddings else cfg.vocab_size * d,
        layers=cfg.n_layers,
        dim=d,
    )


def chinchilla_optimal(flops: float) -> tuple[float, float]:
    """(N, D) with D = 20·N and 6·N·D = flops: the published rule of thumb."""
    n = math.sqrt(flops / (6 * CHINCHILLA_TOKENS_PER_PARAM))
    return n, CHINCHILLA_TOKENS_PER_PARAM * n


def family(cfg: ModelConfig) -> dict[str, int]:
    """A preset's shape family for `shape_for_params`: its head size, and its width per layer
    in whole heads (tiny: 16 and 32; small, gpt2-124m, 1b: 64 and 64)."""
    head_dim = cfg.dim // cfg.n_heads
    return {
        "head_dim": head_dim,
        "aspect": head_dim * max(1, round(cfg.dim / cfg.n_layers / head_dim)),
    }


def shape_for_params(
    base: ModelConfig,
    params: float,
    head_dim: int = 64,
    non_embedding: bool = False,
    depth: int = 0,
    aspect: int = 64,
) -> ModelConfig:
    """A shape of about `params` parameters (all, or with `non_embedding` those that cost
    FLOPs) in `base`'s family: depth L, width aspect·L (heads of `head_dim`), derived SwiGLU
    width, base's vocabulary, tying and GQA ratio; the depth whose count comes closest wins (or
    the family's shape of depth `depth`)."""
    ratio = max(1, base.n_heads // base.n_kv_heads)

    def shaped(layers: int) -> ModelConfig:
        heads = max(1, aspect * layers // head_dim)
        kv = heads // ratio if heads % ratio == 0 else heads  # keep GQA where it divides
        return dataclasses.replace(
            base, dim=heads * head_dim, n_layers=layers, n_heads=heads, n_kv_heads=kv, ffn_dim=0
        )

    if depth:
        return shaped(depth)
    return min(
        (shaped(layers) for layers in range(1, 129)),
        key=lambda c: abs(math.log(_count(c, non_embedding) / params)),
    )


def _count(cfg: ModelConfig, non_embedding: bool) -> int:
    p = count_params(cfg)
    return p.non_embedding if non_embedding else p.total


def tokens_per_step(cfg: Config, gpus: int = 1) -> int:
    """Global tokens per optimizer step: train.tokens_per_step, or one micro-batch per GPU."""
    return cfg.train.tokens_per_step or cfg.train.micro_batch_size * cfg.data.seq_len * gpus


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token as the MFU meter counts them: 6·N + 12·L·H·Q·T."""
    n = count_params(cfg).non_embedding
    return 6 * n + 12 * cfg.n_layers * cfg.n_heads * (cfg.dim // cfg.n_heads) * seq_len


def block_activation_bytes(cfg: ModelConfig, tokens: int, bf16: bool) -> int:
    """Bytes one block saves for backward over `tokens` tokens.

    Per token, with c the compute dtype's size (2 under bf16 autocast, 4 in fp32): each of the
    two RMSNorms saves its fp32 input, fp32 output, the c-byte copy its matmul reads and a 4-byte
    rstd; attention saves q/k/v (c·Q·(H+2KV)), the rotated q and k (c·Q·(H+KV)), the fp32
    log-sum-exp per head and its c-byte output; the MLP saves gate and up (2·c·F), silu(gate)
    and the down projection's input (2·c·F).
    """
    c = 2 if bf16 else 4
    d, hd, f = cfg.dim, cfg.dim // cfg.n_heads, ffn_hidden(cfg)
    h, kv = cfg.n_heads, cfg.n_kv_heads
    norm = (8 + c) * d + 4
    return tokens * (2 * norm + c * hd * (2 * h + 3 * kv) + 4 * h + c * d + 4 * c * f)


def activation_bytes(cfg: ModelConfig, tokens: int, bf16: bool, checkpointing: bool) -> int:
    """Bytes autograd keeps for backward over one micro-batch of `tokens` tokens.

    Every block's activations (`block_activation_bytes`), plus outside the blocks the final norm,
    the fp32 log-softmax of the logits (4·V) and the int64 inputs and targets. With checkpointing
    each block keeps only its fp32 input (4·d), and one block's activations live again while it
    is recomputed. QK-norm's per-head norms (model.qk_norm) are not counted: a few
    c·Q·(H+KV) bytes per token more.
    """
    c = 2 if bf16 else 4
    outside = tokens * ((8 + c) * cfg.dim + 4 + 4 * cfg.vocab_size + 16)
    block = block_activation_bytes(cfg, tokens, bf16)
    if checkpointing:
        return cfg.n_layers * tokens * 4 * cfg.dim + block + outside
    return cfg.n_layers * block + outside


@dataclass(frozen=True)
class Memory:
    """Estimated bytes per GPU during a training step."""

    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations


def optimizer_bytes(cfg: Config, p: ParamCount) -> int:
    """Optimizer state: AdamW's two fp32 moments per parameter, or with Muon one fp32
    momentum buffer for the blocks' matrices (`muon_params`) and AdamW's two for the rest."""
    if cfg.optim.name == "muon":
        hidden = p.attention + p.mlp
        return 4 * hidden + 8 * (p.total - hidden)
    return 8 * p.total


def memory_per_gpu(
    cfg: Config, gpus: int, strategy: str, checkpointing: bool, bf16: bool = True
) -> Memory:
    """Training memory per GPU for `strategy` ("ddp" or "fsdp") over `gpus` GPUs."""
    p = count_params(cfg.model)
    shard = gpus if strategy == "fsdp" and gpus > 1 else 1
    weights = 4 * p.total / shard
    if strategy == "fsdp" and gpus > 1:  # two blocks gathered at a time (one prefetched)
        weights += 2 * 4 * p.per_layer
    matmul = p.attention + p.mlp + (p.head or p.embedding)
    if bf16:  # autocast's bf16 copies of the matmul weights
        weights += 2 * matmul / shard
    tokens = cfg.train.micro_batch_size * cfg.data.seq_len
    return Memory(
        weights=math.ceil(weights),
        gradients=math.ceil(4 * p.total / shard),
        optimizer=math.ceil(optimizer_bytes(cfg, p) / shard),
        activations=activation_bytes(cfg.model, tokens, bf16, checkpointing),
    )


def smallest_fit(cfg: Config, gpu: GPU, strategy: str, checkpointing: bool) -> int | None:
    """Fewest GPUs on which a step fits (DDP: 1 or never); None if none up to MAX_GPUS."""
    limit = HEADROOM * gpu.memory_gb * 1e9
    if strategy == "ddp":
        return 1 if memory_per_gpu(cfg, 1, "ddp", checkpointing).total <= limit else None
    n = 1
    while n <= MAX_GPUS:
        if memory_per_gpu(cfg, n, "fsdp", checkpointing).total <= limit:
            return n
        n *= 2
    return None


@dataclass
class Plan:
    params: ParamCount
    seq_len: int
    micro_batch_size: int
    tokens_per_step: int
    steps: int
    train_tokens: int
    flops_per_token: float
    train_flops: float
    chinchilla_tokens: int
    gpus: int
    gpu: str
    gpu_peak_bf16: float
    gpu_memory_gb: float
    mfu: float
    hours: float
    gpu_hours: float
    cost_usd: float | None
    memory: dict[str, Memory]  # "ddp", "ddp+ckpt", "fsdp", "fsdp+ckpt" at `gpus` GPUs
    fits: dict[str, bool]  # False for FSDP2 with Muon, which refuses it
    smallest_fit: dict[str, int | None]
    optimizer: str = "adamw"  # optim.name

    def to_dict(self) -> dict:
        out = asdict(self)
        out["params"] = {
            **{k: v for k, v in out["params"].items() if k not in ("layers", "dim")},
            "total": self.params.total,
            "non_embedding": self.params.non_embedding,
        }
        out["memory"] = {k: {**asdict(m), "total": m.total} for k, m in self.memory.items()}
        return out


def make_plan(
    cfg: Config,
    gpus: int = 1,
    gpu: str = "h100",
    mfu: float = 0.4,
    usd_per_gpu_hour: float | None = None,
    train_tokens: int | None = None,
) -> Plan:
    """The plan for training `cfg` on `gpus` GPUs of type `gpu` at model-FLOPs utilization `mfu`.

    Training tokens are max_steps × global tokens per step (train.tokens_per_step, or one
    micro-batch per GPU), unless `train_tokens` is given.
    """
    if gpus < 1:
        raise ValueError(f"--gpus must be at least 1, got {gpus}")
    if not 0 < mfu <= 1:
        raise ValueError(f"--mfu must be in (0, 1], got {mfu}")
    spec = gpu_type(gpu)
    seq = cfg.data.seq_len
    per_step = tokens_per_step(cfg, gpus)
    tokens = train_tokens if train_tokens is not None else cfg.train.max_steps * per_step
    fpt = flops_per_token(cfg.model, seq)
    flops = fpt * tokens
    seconds = flops / (gpus * spec.peak_bf16 * mfu)
    params = count_params(cfg.model)
    memory, fits, smallest = {}, {}, {}
    for strategy in ("ddp", "fsdp"):
        refused = not cfg.optim.supports(strategy)  # Muon under FSDP2
        for ckpt in (False, True):
            key = strategy + ("+ckpt" if ckpt else "")
            memory[key] = memory_per_gpu(cfg, gpus, strategy, ckpt)
            fits[key] = not refused and memory[key].total <= HEADROOM * spec.memory_gb * 1e9
            smallest[key] = None if refused else smallest_fit(cfg, spec, strategy, ckpt)
    return Plan(
        params=params,
        seq_len=seq,
        micro_batch_size=cfg.train.micro_batch_size,
        tokens_per_step=per_step,
        steps=math.ceil(tokens / per_step),
        train_tokens=tokens,
        flops_per_token=fpt,
        train_flops=flops,
        chinchilla_tokens=round(CHINCHILLA_TOKENS_PER_PARAM * params.total),
        gpus=gpus,
        gpu=gpu.lower(),
        gpu_peak_bf16=spec.peak_bf16,
        gpu_memory_gb=spec.memory_gb,
        mfu=mfu,
        hours=seconds / 3600,
        gpu_hours=gpus * seconds / 3600,
        cost_usd=None if usd_per_gpu_hour is None else gpus * seconds / 3600 * usd_per_gpu_hour,
        memory=memory,
        fits=fits,
        smallest_fit=smallest,
        optimizer=cfg.optim.name,
    )
