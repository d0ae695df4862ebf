"""A LLaMA-style decoder: RMSNorm, rotary embeddings, grouped-query attention (SDPA), SwiGLU;
optionally QK-norm (Qwen3's per-head RMSNorm of queries and keys).

Architecture only, in stock torch ops: no optimizer, data, parallelism or custom kernels here
(those are applied from outside). Parameter names and layouts follow Hugging Face's
`LlamaForCausalLM` (with QK-norm, `Qwen3ForCausalLM`; including the rotate-half RoPE
convention), except that the q/k/v and gate/up
projections are stored fused (one matmul each): export and import are a rename plus a row split or
concat, never a permutation:

    model = Llama(ModelConfig(vocab_size=4096, dim=128, n_layers=4, n_heads=4, n_kv_heads=2))
    logits = model(tokens)                       # (B, T) -> (B, T, vocab)
    out = model.generate(prompt, 50, temperature=0.8, top_k=50)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from kiln.components.common.config import ModelConfig

LOW_PRECISION = (torch.float16, torch.bfloat16)


def ffn_dim(cfg: ModelConfig) -> int:
    """SwiGLU hidden size: explicit, or 8/3·dim rounded up to `ffn_multiple_of`."""
    if cfg.ffn_dim:
        return cfg.ffn_dim
    hidden = int(8 * cfg.dim / 3)
    return cfg.ffn_multiple_of * math.ceil(hidden / cfg.ffn_multiple_of)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in LOW_PRECISION:
            # Normalize in fp32 and scale in the input dtype, as Hugging Face does.
            normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)
            return self.weight * normed
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rope_tables(head_dim: int, max_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sign-folded sin tables, (max_len, head_dim), in HF Llama's rotate-half layout.

    Frequency i rotates the pair (i, i + head_dim/2). sin's first half is negated, so that HF's
    rotate_half(x)·sin, with rotate_half(x) = (−x2, x1), becomes swap_halves(x)·sin.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # (T, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, hd)
    sin = emb.sin()
    sin[:, : head_dim // 2] *= -1
    return emb.cos(), sin


def swap_halves(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (x2, x1) over the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """HF's x·cos + rotate_half(x)·sin, given `rope_tables` rows that broadcast against x (..., hd)."""
    return torch.addcmul(x * cos, swap_halves(x), sin)


class KVCache:
    """Preallocated keys/values for incremental decoding, one pair per layer."""

    def __init__(
        self, n_layers: int, batch: int, n_kv_heads: int, max_len: int, head_dim: int, device, dtype
    ):
        shape = (batch, n_kv_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.length = 0  # tokens already cached

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.length, self.length + k.shape[2]
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.n_kv_heads
        self.head_dim = cfg.dim // cfg.n_heads
        # q, k and v projections as one matmul: rows [q (H·hd) | k (KV·hd) | v (KV·hd)].
        # Export splits it into HF's q_proj/k_proj/v_proj (a row slice, no permutation).
        qkv_rows = (cfg.n_heads + 2 * cfg.n_kv_heads) * self.head_dim
        self.qkv_proj = nn.Linear(cfg.dim, qkv_rows, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * self.head_dim, cfg.dim, bias=False)
        # QK-norm (Qwen3): per-head RMSNorm of queries and keys, before RoPE.
        self.q_norm = RMSNorm(self.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.dropout = cfg.dropout

    def forward(self, x, cos, sin, cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        H, KV = self.n_heads, self.n_kv_heads
        qkv = self.qkv_proj(x).view(B, T, H + 2 * KV, self.head_dim)
        qk, v = qkv.split([H + KV, KV], dim=2)
        if self.q_norm is not None:
            q, k = qk.split([H, KV], dim=2)
            qk = torch.cat((self.q_norm(q), self.k_norm(k)), dim=2)
        # q and k rotate together in one pass, in the projection's dtype as HF does.
        q, k = apply_rope(qk, cos.to(qk.dtype), sin.to(qk.dtype)).split([H, KV], dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, hd)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.update(self.layer, k, v)
        if past == 0:
            mask, causal = None, True
        elif T == 1:
            mask, causal = None, False  # one new token attends to everything cached
        else:  # a chunk after a cached prefix: causal within the chunk, full over the prefix
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            causal = False
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal, enable_gqa=H != KV
        )
        return F.dropout(self.o_proj(y.transpose(1, 2).reshape(B, T, -1)), p, self.training)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = ffn_dim(cfg)
        # Rows [gate | up]: one matmul; export splits it into HF's gate_proj/up_proj.
        self.gate_up_proj = nn.Linear(cfg.dim, 2 * hidden, bias=False)
        self.down_proj = nn.Linear(hidden, cfg.dim, bias=False)
        self.relu2 = cfg.mlp_act == "relu2"
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        act = F.relu(gate).square() if self.relu2 else F.silu(gate)
        return F.dropout(self.down_proj(act * up), self.dropout, self.training)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, cache=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        cos, sin = rope_tables(cfg.dim // cfg.n_heads, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        # Recompute each block's activations during backward instead of keeping them (memory for
        # about a third more compute); set from outside, like Hugging Face's gradient checkpointing.
        self.checkpoint_layers = False
        self.init_weights()

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Normal(0, init_std); residual output projections scaled by 1/sqrt(2·n_layers) (GPT-2)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):  # every RMSNorm gain (layer, q/k, final)
                p.fill_(1.0)
                continue
            scale = (
                1 / math.sqrt(2 * self.cfg.n_layers)
                if name.endswith(("o_proj.weight", "down_proj.weight"))
                else 1.0
            )
            # Sample on CPU with the generator so init is identical whatever the device.
            p.copy_(torch.randn(p.shape, generator=gen) * std * scale)

    def num_params(self, embedding: bool = True) -> int:
        """Parameter count; without the token-embedding table if `embedding=False` (a lookup, no FLOPs)."""
        n = sum(p.numel() for p in self.parameters())
        if not embedding and not self.cfg.tie_embeddings:
            n -= self.embed_tokens.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token, PaLM appendix B: 6N + 12·L·H·Q·T."""
        c = self.cfg
        return (
            6 * self.num_params(embedding=False)
            + 12 * c.n_layers * c.n_heads * (c.dim // c.n_heads) * seq_len
        )

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """(B, T) token ids -> (B, T, vocab) logits. With a cache, positions continue after it."""
        B, T = tokens.shape
        start = cache.length if cache is not None else 0
        if start + T > self.cfg.max_seq_len:
            raise ValueError(
                f"sequence of {start + T} tokens exceeds max_seq_len={self.cfg.max_seq_len}"
            )
        x = self.embed_tokens(tokens)  # (B, T, C)
        # This call's positions, (T, 1, hd) to broadcast over heads; shared by every layer.
        cos = self.rope_cos[start : start + T, None]
        sin = self.rope_sin[start : start + T, None]
        for layer in self.layers:
            if self.checkpoint_layers and cache is None and torch.is_grad_enabled():
                x = checkpoint(layer, x, cos, sin, use_reentrant=False)
            else:
                x = layer(x, cos, sin, cache)
        if cache is not None:
            cache.length += T
        return self.lm_head(self.norm(x))

    @torch.no_grad()
    def generate(
        self,
        prompt: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample a continuation of (B, T) prompt ids with a KV cache; returns (B, T + new).

        temperature 0 means greedy. top_k keeps the k most likely tokens, top_p the smallest set
        whose probability reaches p. Stops early once every row has produced `eos_id`.
        """
        B, T = prompt.shape
        total = min(T + max_new_tokens, self.cfg.max_seq_len)
        if T >= total:
            return prompt
        p = next(self.parameters())
        cache = KVCache(
            self.cfg.n_layers,
            B,
            self.cfg.n_kv_heads,
            total,
            self.cfg.dim // self.cfg.n_heads,
            p.device,
            p.dtype,
        )
        out = prompt
        logits = self(prompt, cache)[:, -1]
        done = torch.zeros(B, dtype=torch.bool, device=prompt.device)
        while out.shape[1] < total:
            nxt = sample_next(logits.float(), temperature, top_k, top_p, generator)
            if eos_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
                done |= nxt == eos_id
            out = torch.cat([out, nxt[:, None]], dim=1)
            if (eos_id is not None and bool(done.all())) or out.shape[1] >= total:
                break
            logits = self(nxt[:, None], cache)[:, -1]
        return out


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None) -> torch.Tensor:
    """Pick one id per row from (B, vocab) logits."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # keep tokens until mass reaches p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    if generator is not None:
        probs = probs.to(generator.device)  # multinomial samples where its generator lives
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(logits.device)
