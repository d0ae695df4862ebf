import math

import torch
import torch.nn.functional as F

from kiln.components.common.config import ModelConfig
from kiln.components.pretrain.model import (
    KVCache,
    Llama,
    RMSNorm,
    apply_rope,
    rope_tables,
    sample_next,
)


def small(**kw) -> Llama:
    cfg = ModelConfig(
        vocab_size=97, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64, **kw
    )
    model = Llama(cfg)
    model.init_weights(seed=0)
    return model


def test_shapes_and_param_count():
    model = small()
    logits = model(torch.randint(0, 97, (3, 17)))
    assert logits.shape == (3, 17, 97)
    tied = small(tie_embeddings=True)
    assert tied.lm_head.weight is tied.embed_tokens.weight
    assert model.num_params() - tied.num_params() == 97 * 32


def test_causal_mask_future_tokens_do_not_leak():
    model = small()
    x = torch.randint(0, 97, (2, 20))
    y = x.clone()
    y[:, 12:] = (y[:, 12:] + 1) % 97
    assert torch.equal(model(x)[:, :12], model(y)[:, :12])
    assert not torch.allclose(model(x)[:, 12:], model(y)[:, 12:])


def hf_rope_reference(x: torch.Tensor, theta: float) -> torch.Tensor:
    """HF Llama's rotary embedding in float64: x (T, heads, hd) at positions 0..T-1."""
    T, hd = x.shape[0], x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    freqs = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq  # (T, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # (T, 1, hd)
    x1, x2 = x.double().chunk(2, dim=-1)
    return x.double() * emb.cos() + torch.cat((-x2, x1), dim=-1) * emb.sin()


def eager_attention_reference(attn, x: torch.Tensor, theta: float) -> torch.Tensor:
    """Causal grouped-query attention in float64, written out as HF's eager path computes it."""
    B, T, _ = x.shape
    H, KV, hd = attn.n_heads, attn.n_kv_heads, attn.head_dim
    w = attn.qkv_proj.weight.double()
    q, k, v = (x.double() @ w.T).view(B, T, H + 2 * KV, hd).split([H, KV, KV], dim=2)
    q = torch.stack([hf_rope_reference(q[b], theta) for b in range(B)]).transpose(1, 2)
    k = torch.stack([hf_rope_reference(k[b], theta) for b in range(B)]).transpose(1, 2)
    k, v = k.repeat_interleave(H // KV, dim=1), v.transpose(1, 2).repeat_interleave(H // KV, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    y = scores.softmax(-1) @ v  # (B, H, T, hd)
    return y.transpose(1, 2).reshape(B, T, H * hd) @ attn.o_proj.weight.double().T


def test_rms_norm_matches_float64_reference():
    norm = RMSNorm(48, eps=1e-5)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(3, 7, 48) * 4
    ref = x.double() * torch.rsqrt(x.double().pow(2).mean(-1, keepdim=True) + 1e-5)
    ref = ref * norm.weight.double()
    assert torch.allclose(norm(x).double(), ref, atol=1e-5)
    low = norm(x.bfloat16())  # normalized in fp32, then scaled as Hugging Face does
    assert torch.allclose(low.double(), ref, rtol=2e-2, atol=2e-2)
    assert torch.allclose(norm.double()(x.double()), ref, atol=1e-12)  # float64 stays float64


def test_rope_matches_hf_rotate_half_reference():
    theta = 500000.0
    cos, sin = rope_tables(16, 40, theta)
    x = torch.randn(40, 3, 16)
    ours = apply_rope(x, cos[:, None], sin[:, None])
    assert torch.allclose(ours.double(), hf_rope_reference(x, theta), atol=1e-5)
    assert torch.equal(ours[0], x[0])  # position 0 is not rotated


def test_attention_matches_eager_reference():
    model = small(rope_theta=500000.0)
    attn = model.layers[0].self_attn
    x = torch.randn(2, 24, 32)
    T = x.shape[1]
    ours = attn(x, model.rope_cos[:T, None], model.rope_sin[:T, None])
    assert torch.allclose(ours.double(), eager_attention_reference(attn, x, 500000.0), atol=1e-5)


def test_kv_cache_forward_matches_full_forward():
    model = small().eval()
    tokens = torch.randint(0, 97, (2, 20))
    full = model(tokens)
    p = next(model.parameters())
    cache = KVCache(2, 2, 2, 20, 8, p.device, p.dtype)
    # a prefix, then a chunk after it (causal mask over prefix + chunk), then single tokens
    parts = [model(tokens[:, :9], cache), model(tokens[:, 9:16], cache)]
    parts += [model(tokens[:, i : i + 1], cache) for i in range(16, 20)]
    assert cache.length == 20
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


def test_bfloat16_forward_backward_and_generation():
    model = small()
    tokens = torch.randint(0, 97, (2, 16))
    reference = model(tokens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(tokens)
    assert logits.dtype == torch.bfloat16
    F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten()).backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())
    assert (logits.float() - reference).abs().max() < 0.01
    half = model.to(torch.bfloat16).eval()
    assert (half(tokens).float() - reference).abs().max() < 0.01
    out = half.generate(tokens[:, :4], 6, temperature=0)
    assert out.shape == (2, 10)


def test_residual_projections_are_scaled_at_init():
    model = small()
    q = model.layers[0].self_attn.qkv_proj.weight.detach().std()
    o = model.layers[0].self_attn.o_proj.weight.detach().std()
    assert 1.7 < float(q / o) < 2.3  # 1/sqrt(2·n_layers) = 1/2


def test_kv_cache_generation_matches_full_recompute():
    model = small().eval()
    prompt = torch.randint(0, 97, (2, 5))
    cached = model.generate(prompt, 12, temperature=0)
    seq = prompt
    for _ in range(12):
        seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, seq)


def test_sampling_filters():
    logits = torch.tensor([[0.0, 1.0, 5.0, 2.0]])
    gen = torch.Generator().manual_seed(0)
    picks = {int(sample_next(logits, 1.0, top_k=1, generator=gen)) for _ in range(20)}
    assert picks == {2}
    picks = {int(sample_next(logits, 1.0, top_p=0.5, generator=gen)) for _ in range(20)}
    assert picks == {2}
    picks = {int(sample_next(logits, 5.0, top_k=2, generator=gen)) for _ in range(200)}
    assert picks == {2, 3}


def test_generation_is_seeded_and_stops_at_eos():
    model = small().eval()
    prompt = torch.randint(0, 97, (1, 4))
    a = model.generate(prompt, 10, top_k=20, generator=torch.Generator().manual_seed(1))
    b = model.generate(prompt, 10, top_k=20, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (1, 14)
    eos = int(a[0, 5])
    stopped = model.generate(
        prompt, 10, top_k=20, eos_id=eos, generator=torch.Generator().manual_seed(1)
    )
    assert stopped.shape[1] == 6 and int(stopped[0, -1]) == eos
