"""Named starting points: a preset is a few lines on top of the defaults."""

from __future__ import annotations

from collections.abc import Callable

from kiln.components.common.config.tree import Config


def _tiny(c: Config) -> None:
    """CPU, seconds per run: for tests and laptops. What `mini` found free of cost carries over:
    the token embedding learning 10× faster than the rest and warmup-stable-decay (10-12% lower
    held-out loss at 200 steps, docs/training.md)."""
    c.model.dim, c.model.n_layers, c.model.n_heads, c.model.n_kv_heads = 64, 2, 4, 2
    c.model.max_seq_len = 128
    c.data.seq_len = 64
    c.train.max_steps, c.train.micro_batch_size = 200, 8
    c.train.log_every, c.train.eval_every, c.train.eval_batches = 10, 100, 4
    c.train.ckpt_every = 100
    c.train.sample_tokens = 32
    c.optim.lr, c.optim.warmup_steps = 3e-3, 20
    c.optim.embedding_lr = 3e-2
    c.optim.schedule, c.optim.wsd_decay_frac = "wsd", 0.35


def _mini(c: Config) -> None:
    """A few minutes on a laptop CPU, tuned for validation loss per second (Benchmark 2 and the
    ablations in docs/training.md measure it): narrow and four deep, two 64-wide query heads
    sharing one key/value head, QK-norm, a small BPE vocabulary, Muon for the blocks' matrices, a
    token embedding learning 10× faster than the rest (its rows are updated only when their token
    occurs), warmup-stable-decay with a long decay."""
    c.tokenizer.vocab_size = 2048
    c.model.dim, c.model.n_layers, c.model.n_heads, c.model.n_kv_heads = 128, 4, 2, 1
    c.model.qk_norm = True
    c.model.max_seq_len = c.data.seq_len = 128
    c.train.max_steps, c.train.micro_batch_size = 800, 16
    c.train.log_every, c.train.eval_every, c.train.eval_batches = 50, 200, 10
    c.train.ckpt_every = 200
    c.optim.lr, c.optim.warmup_steps, c.optim.min_lr_ratio = 2e-3, 25, 0.05
    c.optim.embedding_lr = 2e-2
    c.optim.name, c.optim.muon_lr = "muon", 4e-3  # its best peak here (2e-3 to 1.6e-2 swept)
    c.optim.schedule, c.optim.wsd_decay_frac = "wsd", 0.35


def _small(c: Config) -> None:
    """~13M parameters (4,096-token vocabulary): a laptop CPU for hours or one small GPU. `mini`'s
    recipe scaled up (QK-norm, Muon at 2× the AdamW peak, the embedding at 10×, warmup-stable-
    decay): at equal steps it beat AdamW by 4.7% here (docs/training.md)."""
    c.model.dim, c.model.n_layers, c.model.n_heads, c.model.n_kv_heads = 384, 6, 6, 2
    c.model.qk_norm = True
    c.model.max_seq_len = 512
    c.data.seq_len = 512
    c.train.max_steps, c.train.micro_batch_size = 5000, 16
    c.optim.lr, c.optim.warmup_steps = 1e-3, 200
    c.optim.embedding_lr = 1e-2
    c.optim.name, c.optim.muon_lr = "muon", 2e-3
    c.optim.schedule, c.optim.wsd_decay_frac = "wsd", 0.35


def _gpt2_124m(c: Config) -> None:
    """GPT-2 small sized LLaMA (12 × 768, 12 heads, 1024 context, tied embeddings, 50257 vocab)."""
    c.model.vocab_size = 50304  # GPT-2's 50257 padded to a multiple of 64 for fast matmuls
    c.model.dim, c.model.n_layers, c.model.n_heads, c.model.n_kv_heads = 768, 12, 12, 12
    c.model.ffn_dim = 2048  # 8/3·768: the same MLP parameter count as GPT-2's 4·768 GELU MLP
    c.model.max_seq_len = 1024
    c.model.tie_embeddings = True
    c.data.seq_len = 1024
    c.train.micro_batch_size, c.train.tokens_per_step = 16, 524288
    c.train.max_steps, c.train.dtype, c.train.compile = 19073, "bf16", True
    c.optim.lr, c.optim.warmup_steps = 6e-4, 715


def _1b(c: Config) -> None:
    """~1.1B parameters (TinyLlama shape): multi-GPU, FSDP."""
    c.model.vocab_size = 32000
    c.model.dim, c.model.n_layers, c.model.n_heads, c.model.n_kv_heads = 2048, 22, 32, 4
    c.model.ffn_dim = 5632
    c.model.max_seq_len = 2048
    c.data.seq_len = 2048
    c.train.micro_batch_size, c.train.tokens_per_step = 8, 2097152
    c.train.max_steps, c.train.dtype, c.train.compile = 50000, "bf16", True
    c.dist.strategy, c.dist.use_gpu = "fsdp", True
    c.optim.lr, c.optim.warmup_steps = 4e-4, 2000


_CHAT_PROMPTS = ["What does `json.dumps` do?", "Explain `os.path.join` in one sentence."]


def _sft(c: Config) -> None:
    """What every fine-tuning preset shares: a chat model of its own name, the base's shape
    (the model section does not apply), a short warmup and a few epochs."""
    c.tracking.model_name = "kiln-llama-chat"
    c.sft.base, c.sft.epochs = "models:/kiln-llama@champion", 3.0
    c.optim.warmup_steps, c.optim.schedule, c.optim.min_lr_ratio = 10, "cosine", 0.0
    c.optim.weight_decay = 0.0
    # AdamW at one peak for every parameter, whatever the base preset pretrained with
    c.optim.name, c.optim.muon_lr, c.optim.embedding_lr = "adamw", 0.0, 0.0
    c.train.sample_prompts = list(_CHAT_PROMPTS)
    c.eval.prompts = list(_CHAT_PROMPTS)
    c.eval.temperature = 0.0  # answers to compare from run to run


def _sft_tiny(c: Config) -> None:
    """Fine-tune a `tiny` base into a chat model on CPU in about a minute."""
    _tiny(c)
    _sft(c)
    c.data.seq_len = c.model.max_seq_len = 128
    c.train.micro_batch_size = 8
    c.train.eval_every, c.train.ckpt_every, c.train.log_every = 50, 50, 10
    c.optim.lr = 1e-3


def _sft_small(c: Config) -> None:
    """Fine-tune a `small` base (laptop CPU or one small GPU)."""
    _small(c)
    _sft(c)
    c.train.micro_batch_size = 16
    c.train.eval_every, c.train.ckpt_every = 100, 200
    c.optim.lr = 2e-4


PRESETS: dict[str, Callable[[Config], None]] = {
    "tiny": _tiny,
    "mini": _mini,
    "small": _small,
    "gpt2-124m": _gpt2_124m,
    "1b": _1b,
    "sft-tiny": _sft_tiny,
    "sft-small": _sft_small,
}


def preset(name: str) -> Config:
    """The named preset as a fresh, validated Config."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    cfg = Config()
    PRESETS[name](cfg)
    cfg.validate()
    return cfg
