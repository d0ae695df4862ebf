"""Hand-derived autograd functions for the model's elementwise pieces: RMSNorm, rotary q/k, SwiGLU.

On CPU in float32 each runs as one fused C++ kernel forward and one backward (`cpu_ops`, built on
first use; 13% faster whole training steps at 128 wide than the torch-op versions below). Elsewhere
(GPU, other dtypes, or no compiler) they run as plain torch ops with backward passes derived by hand.
Autograd's generic versions of these cost more than the matmuls around them at small widths on CPU:
`F.rms_norm`'s backward is a chain of ~10 kernels, slicing q/k/v out of the fused projection
zero-fills a full-size gradient per slice and adds them up, and `chunk` + `cat` copies the SwiGLU
gradient once more. Here every gradient is written once, straight into its final buffer.

Each function equals its reference composite (tests check values and gradients in float64):

    rms_norm(x, w, eps)          == x * rsqrt(mean(x², -1) + eps) * w
    rotary_qkv(qkv, cos, sin, H) == (rope(q), rope(k), v) with HF's rotate-half convention,
                                    each (B, heads, T, hd)
    swiglu(gate_up)              == silu(gate) * up, where gate_up = [gate | up] on the last dim
    causal_attention(q, k, v)    == F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                   enable_gqa=True)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kiln.components.pretrain import cpu_ops


def _native(*tensors: torch.Tensor):
    """The fused CPU kernels when every tensor is a float32 CPU tensor and they are built, else None."""
    if all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors):
        return cpu_ops.load()
    return None


class _NativeRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps: float):
        x = x.contiguous()
        y, rstd = cpu_ops.load().rms_norm_forward(x, weight.contiguous(), eps)
        ctx.save_for_backward(x, rstd, weight)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, rstd, weight = ctx.saved_tensors
        d_x, d_weight = cpu_ops.load().rms_norm_backward(
            grad.contiguous(), x, rstd, weight.contiguous()
        )
        return d_x, d_weight, None


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        # rstd = 1 / sqrt(mean(x²) + eps), one row-reduction pass
        rstd = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_()
        rstd = rstd.div_(x.shape[-1]).add_(eps).rsqrt_()
        normed = x * rstd
        ctx.save_for_backward(normed, rstd, weight)
        return normed * weight

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        normed, rstd, weight = ctx.saved_tensors
        g_normed = grad * normed
        d_weight = g_normed.reshape(-1, g_normed.shape[-1]).sum(0)
        # d_x = rstd · (g·w − x̂ · mean(g·w·x̂)); mean(g·w·x̂) as a matrix-vector product
        mean_gwx = (g_normed @ weight).unsqueeze_(-1).div_(normed.shape[-1])
        d_x = (grad * weight).mul_(rstd)
        d_x.addcmul_(normed, mean_gwx * rstd, value=-1)
        return d_x, d_weight, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension with a gain, computed in x's dtype."""
    if _native(x, weight) is not None:
        return _NativeRMSNorm.apply(x, weight, eps)
    return _RMSNorm.apply(x, weight, eps)


def _swap_halves(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((x[..., half:], x[..., :half]), dim=-1)


class _RotaryQKV(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv, cos, sin, n_heads: int):
        # qkv (B, T, H + 2·KV, hd); cos/sin (T, H + KV, hd), contiguous, so each op below is one
        # long vectorized loop over a token's q and k instead of many hd-long ones.
        rotated = cos.shape[1]
        cos, sin = cos.to(qkv.dtype), sin.to(qkv.dtype)  # low precision rotates as HF does
        out = torch.empty_like(qkv, memory_format=torch.contiguous_format)
        qk, out_qk = qkv[:, :, :rotated], out[:, :, :rotated]
        torch.mul(_swap_halves(qk), sin, out=out_qk).addcmul_(qk, cos)
        out[:, :, rotated:].copy_(qkv[:, :, rotated:])
        ctx.save_for_backward(cos, sin)
        ctx.n_heads = n_heads
        return out[:, :, :n_heads], out[:, :, n_heads:rotated], out[:, :, rotated:]

    @staticmethod
    def backward(ctx, d_q, d_k, d_v):
        cos, sin = ctx.saved_tensors
        n_heads, rotated = ctx.n_heads, cos.shape[1]
        ref = next(g for g in (d_q, d_k, d_v) if g is not None)
        B, T, _, hd = ref.shape
        kv = rotated - n_heads
        d_qkv = ref.new_empty(B, T, rotated + kv, hd)
        for grad, part in zip((d_q, d_k, d_v), d_qkv.split([n_heads, kv, kv], 2), strict=True):
            part.zero_() if grad is None else part.copy_(grad)
        # The rotation is orthogonal: its gradient is the rotation by −angle (sin's sign flips).
        d_qk = d_qkv[:, :, :rotated]
        swapped = _swap_halves(d_qk)
        d_qk.mul_(cos).addcmul_(swapped, sin, value=-1)
        return d_qkv, None, None, None


class _NativeRotaryQKV(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv, cos, sin, n_heads: int):
        ctx.save_for_backward(cos, sin)
        kv = (qkv.shape[2] - n_heads) // 2
        ctx.heads = (n_heads, kv, kv)
        return tuple(cpu_ops.load().rotary_qkv_forward(qkv.contiguous(), cos, sin, n_heads))

    @staticmethod
    def backward(ctx, d_q, d_k, d_v):
        cos, sin = ctx.saved_tensors
        ref = next(g for g in (d_q, d_k, d_v) if g is not None)
        B, _, T, hd = ref.shape
        grads = []
        for grad, heads in zip((d_q, d_k, d_v), ctx.heads, strict=True):
            grads.append(ref.new_zeros(B, heads, T, hd) if grad is None else grad.contiguous())
        return cpu_ops.load().rotary_qkv_backward(*grads, cos, sin), None, None, None


def rope_for_heads(cos: torch.Tensor, sin: torch.Tensor, heads: int):
    """(T, hd) cos and sign-folded sin tables as (T, heads, hd) contiguous tables (torch-op path)."""
    T, hd = cos.shape
    return tuple(t[:, None].expand(T, heads, hd).contiguous() for t in (cos, sin))


def rotary_tables(cos: torch.Tensor, sin: torch.Tensor, heads: int):
    """The tables `rotary_qkv` takes for (T, hd) rows, prepared once per forward for every layer:
    the rows as they are for the fused CPU kernel, else `rope_for_heads` tables (H + KV heads)."""
    if _native(cos, sin) is not None:
        return cos.contiguous(), sin.contiguous()
    return rope_for_heads(cos, sin, heads)


def rotary_qkv(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_heads: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split a fused (B, T, H + 2·KV, hd) projection into rotated q, rotated k and v, each
    (B, heads, T, hd) as attention takes them.

    `cos`/`sin` are `model.rope_tables` rows, (T, hd), for the positions in `qkv`, or the
    `rotary_tables` made from them. Pairs are (i, i + hd/2), HF Llama's rotate-half convention,
    and `sin`'s first half is negated so that rotate_half(x) = (−x2, x1) becomes a plain swap of
    the halves.
    """
    if cos.dim() == 2:
        if _native(qkv, cos, sin) is not None:
            return _NativeRotaryQKV.apply(qkv, cos.contiguous(), sin.contiguous(), n_heads)
        cos, sin = rope_for_heads(cos, sin, n_heads + (qkv.shape[2] - n_heads) // 2)
    q, k, v = _RotaryQKV.apply(qkv, cos, sin, n_heads)
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up.chunk(2, dim=-1)
        act = F.silu(gate)
        ctx.save_for_backward(gate_up, act)
        return act * up

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        gate_up, act = ctx.saved_tensors
        gate, up = gate_up.chunk(2, dim=-1)
        d_gate_up = torch.empty_like(gate_up, memory_format=torch.contiguous_format)
        d_gate, d_up = d_gate_up.chunk(2, dim=-1)
        torch.mul(grad, act, out=d_up)
        torch.ops.aten.silu_backward.grad_input(grad * up, gate, grad_input=d_gate)
        return d_gate_up


class _NativeSwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate_up):
        gate_up = gate_up.contiguous()
        ctx.save_for_backward(gate_up)  # σ(gate) is recomputed in backward: less to store
        return cpu_ops.load().swiglu_forward(gate_up)

    @staticmethod
    def backward(ctx, grad):
        (gate_up,) = ctx.saved_tensors
        return cpu_ops.load().swiglu_backward(grad.contiguous(), gate_up)


def swiglu(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) · up for a fused [gate | up] projection (last dimension)."""
    if _native(gate_up) is not None:
        return _NativeSwiGLU.apply(gate_up)
    return _SwiGLU.apply(gate_up)


# Up to this context, three batched matmuls and a softmax beat the CPU flash-attention kernel,
# whose per-block set-up dominates short rows: +3% whole-step at T=64, +2% at 128, -3% at 256
# (4 layers × 128 wide, 768 tokens per step, fp32, 2 cores).
SHORT_CONTEXT = 128


class _CausalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):
        B, H, T, hd = q.shape
        KV = k.shape[1]
        G, scale = H // KV, hd**-0.5
        # The G query heads sharing a kv head (heads kv·G … kv·G+G−1, as enable_gqa pairs them)
        # become one (G·T)-row batch entry against that head's T keys.
        q3, k3, v3 = (t.reshape(B * KV, -1, hd) for t in (q, k, v))
        mask = torch.full((T, T), float("-inf"), dtype=q.dtype, device=q.device).triu_(1)
        probs = torch.baddbmm(mask.repeat(G, 1), q3, k3.transpose(1, 2), alpha=scale)
        probs = probs.softmax(-1)  # (B·KV, G·T, T)
        ctx.save_for_backward(q3, k3, v3, probs)
        ctx.scale = scale
        return torch.bmm(probs, v3).view(B, H, T, hd)

    @staticmethod
    def backward(ctx, grad):
        q3, k3, v3, probs = ctx.saved_tensors
        B, H, T, hd = grad.shape
        g3 = grad.reshape(q3.shape)
        d_v = torch.bmm(probs.transpose(1, 2), g3)
        d_scores = torch._softmax_backward_data(
            torch.bmm(g3, v3.transpose(1, 2)), probs, -1, probs.dtype
        )
        d_q = torch.bmm(d_scores, k3).mul_(ctx.scale)
        d_k = torch.bmm(d_scores.transpose(1, 2), q3).mul_(ctx.scale)
        kv_shape = (B, k3.shape[0] // B, T, hd)
        return d_q.view(B, H, T, hd), d_k.view(kv_shape), d_v.view(kv_shape)


def use_short_attention(q: torch.Tensor) -> bool:
    """Whether `causal_attention` is the faster path for q (B, H, T, hd): short rows, fp32/64 on CPU."""
    return (
        q.device.type == "cpu"
        and q.dtype in (torch.float32, torch.float64)
        and q.shape[2] <= SHORT_CONTEXT
    )


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal softmax attention, q (B, H, T, hd) against k, v (B, KV, T, hd), H a multiple of KV.

    Materializes the (T, T) probabilities (kept for backward), so it is for short contexts: see
    `use_short_attention`.
    """
    return _CausalAttention.apply(q, k, v)
