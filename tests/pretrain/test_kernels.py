"""The hand-derived autograd functions equal their reference composites, in value and gradient:
the torch-op versions in float64 (gradcheck), the fused C++ CPU kernels in float32."""

import shutil

import pytest
import torch
import torch.nn.functional as F

from kiln.components.pretrain import cpu_ops, kernels
from kiln.components.pretrain.model import rope_tables


def hf_tables(hd, T, theta=10000.0, dtype=torch.float64):
    """HF Llama's cos/sin: angles t·θ^(−2i/hd), repeated for both halves."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    emb = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq).repeat(1, 2)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half_reference(x, T):
    """HF Llama's formula: x·cos + rotate_half(x)·sin."""
    cos, sin = hf_tables(x.shape[-1], T, dtype=x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos[:, None] + torch.cat((-x2, x1), dim=-1) * sin[:, None]


def rotary_reference(qkv, H, KV):
    """Rotated q, k and v, head-major (B, heads, T, hd) as `rotary_qkv` returns them."""
    q, k, v = qkv.split([H, KV, KV], dim=2)
    T = qkv.shape[1]
    out = rotate_half_reference(q, T), rotate_half_reference(k, T), v
    return tuple(t.transpose(1, 2) for t in out)


def tables(hd, T, dtype=torch.float64):
    cos, sin = rope_tables(hd, T, 10000.0)
    return cos.to(dtype), sin.to(dtype)


def test_rms_norm_matches_reference_and_gradcheck():
    x = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(16, dtype=torch.float64, requires_grad=True)
    ref = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w
    torch.testing.assert_close(kernels.rms_norm(x, w, 1e-5), ref)
    torch.testing.assert_close(kernels.rms_norm(x, w, 1e-5), F.rms_norm(x, (16,), w, 1e-5))
    assert torch.autograd.gradcheck(lambda a, b: kernels.rms_norm(a, b, 1e-5), (x, w))


@pytest.mark.parametrize("H,KV", [(4, 4), (4, 2), (6, 1)])
def test_rotary_qkv_matches_rotate_half_and_gradcheck(H, KV):
    hd, T = 8, 7
    cos, sin = tables(hd, T)
    qkv = torch.randn(2, T, H + 2 * KV, hd, dtype=torch.float64, requires_grad=True)
    for got, want in zip(
        kernels.rotary_qkv(qkv, cos, sin, H), rotary_reference(qkv, H, KV), strict=True
    ):
        torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(lambda t: kernels.rotary_qkv(t, cos, sin, H), (qkv,))
    # Tables prepared once per forward (float64: the torch-op path's per-head tables) agree.
    prepared = kernels.rotary_tables(cos, sin, H + KV)
    assert prepared[0].shape == (T, H + KV, hd)
    for got, want in zip(
        kernels.rotary_qkv(qkv, *prepared, H), rotary_reference(qkv, H, KV), strict=True
    ):
        torch.testing.assert_close(got, want)


def test_rotary_qkv_gradient_when_only_some_outputs_are_used():
    cos, sin = tables(8, 5)
    qkv = torch.randn(1, 5, 4, 8, dtype=torch.float64, requires_grad=True)
    q, _, v = kernels.rotary_qkv(qkv, cos, sin, 2)
    (q.sum() + v.sum()).backward()
    ref = qkv.detach().clone().requires_grad_()
    rq, _, rv = rotary_reference(ref, 2, 1)
    (rq.sum() + rv.sum()).backward()
    torch.testing.assert_close(qkv.grad, ref.grad)


def test_rotary_qkv_on_a_non_contiguous_view_and_in_bf16():
    cos, sin = tables(8, 6, torch.float32)
    wide = torch.randn(2, 6, 5, 8)
    qkv = wide[:, :, :4]  # a strided view
    for got, want in zip(
        kernels.rotary_qkv(qkv, cos, sin, 2), rotary_reference(qkv, 2, 1), strict=True
    ):
        torch.testing.assert_close(got, want)
    low = kernels.rotary_qkv(qkv.bfloat16(), cos, sin, 2)  # fp32 tables, bf16 activations
    assert all(t.dtype == torch.bfloat16 for t in low)
    want = rotary_reference(qkv, 2, 1)[0]
    torch.testing.assert_close(low[0].float(), want, atol=0.05, rtol=0.02)


def test_swiglu_matches_reference_and_gradcheck():
    gate_up = torch.randn(3, 4, 10, dtype=torch.float64, requires_grad=True)
    gate, up = gate_up.chunk(2, dim=-1)
    torch.testing.assert_close(kernels.swiglu(gate_up), F.silu(gate) * up)
    assert torch.autograd.gradcheck(kernels.swiglu, (gate_up,))


@pytest.mark.parametrize("H,KV", [(4, 4), (4, 2), (6, 1)])
def test_causal_attention_matches_sdpa_and_gradcheck(H, KV):
    # q, k, v as the model passes them: transposed views of a (B, T, heads, hd) projection.
    q = torch.randn(2, 7, H, 8, dtype=torch.float64).transpose(1, 2).requires_grad_()
    k = torch.randn(2, 7, KV, 8, dtype=torch.float64).transpose(1, 2).requires_grad_()
    v = torch.randn(2, 7, KV, 8, dtype=torch.float64).transpose(1, 2).requires_grad_()
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=KV != H)
    out = kernels.causal_attention(q, k, v)
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), grad)
    want = torch.autograd.grad(ref, (q, k, v), grad)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
    assert torch.autograd.gradcheck(kernels.causal_attention, (q, k, v))


def test_short_attention_is_chosen_for_short_fp32_cpu_contexts_only():
    short = torch.zeros(1, 2, kernels.SHORT_CONTEXT, 8)
    assert kernels.use_short_attention(short)
    assert not kernels.use_short_attention(torch.zeros(1, 2, kernels.SHORT_CONTEXT + 1, 8))
    assert not kernels.use_short_attention(short.bfloat16())  # SDPA keeps low precision stable


@pytest.fixture
def native():
    """The fused CPU kernels; a machine with a C++ compiler must be able to build them."""
    ops = cpu_ops.load()
    if ops is None:
        if shutil.which("c++") or shutil.which("g++"):
            pytest.fail("a C++ compiler is present but the fused CPU kernels did not build")
        pytest.skip("no C++ compiler: the fused CPU kernels cannot be built here")
    return ops


def _torch_ops(monkeypatch):
    monkeypatch.setattr(kernels, "_native", lambda *tensors: None)


def _value_and_grads(fn, inputs, grad_seed=0):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    outs = out if isinstance(out, tuple) else (out,)
    gen = torch.Generator().manual_seed(grad_seed)
    grads = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in outs]
    torch.autograd.backward(outs, grads)
    return [o.detach() for o in outs], [t.grad for t in leaves]


def _assert_native_equals_torch_ops(monkeypatch, fn, inputs, atol=2e-5):
    got = _value_and_grads(fn, inputs)
    with monkeypatch.context() as m:
        _torch_ops(m)
        want = _value_and_grads(fn, inputs)
    for g, w in zip(got[0] + got[1], want[0] + want[1], strict=True):
        torch.testing.assert_close(g, w, atol=atol, rtol=1e-4)


def test_native_rms_norm_equals_torch_ops(native, monkeypatch):
    x, w = torch.randn(3, 70, 40), torch.randn(40)  # 210 rows: several d_weight blocks, a tail
    _assert_native_equals_torch_ops(monkeypatch, lambda a, b: kernels.rms_norm(a, b, 1e-5), (x, w))


def test_native_swiglu_equals_torch_ops(native, monkeypatch):
    gate_up = torch.randn(5, 9, 2 * 37) * 4  # 37: a vector tail; wide range for σ
    _assert_native_equals_torch_ops(monkeypatch, kernels.swiglu, (gate_up,))


@pytest.mark.parametrize("H,KV", [(4, 4), (4, 2), (6, 1)])
def test_native_rotary_qkv_equals_torch_ops(native, monkeypatch, H, KV):
    cos, sin = tables(16, 11, torch.float32)
    qkv = torch.randn(3, 11, H + 2 * KV, 16)
    _assert_native_equals_torch_ops(
        monkeypatch, lambda t: kernels.rotary_qkv(t, cos, sin, H), (qkv,), atol=1e-6
    )
    q, k, v = kernels.rotary_qkv(qkv, cos, sin, H)
    assert q.shape == (3, H, 11, 16) and k.shape == v.shape == (3, KV, 11, 16)
    assert q.is_contiguous() and k.is_contiguous() and v.is_contiguous()


def test_native_kernels_take_strided_inputs_and_unused_outputs(native, monkeypatch):
    cos, sin = tables(8, 6, torch.float32)
    wide = torch.randn(2, 6, 5, 8)
    for fn, inputs in [
        (lambda t: kernels.rotary_qkv(t[:, :, :4], cos, sin, 2)[0], (wide,)),  # k unused
        (lambda t: kernels.swiglu(t.transpose(0, 1)), (torch.randn(6, 2, 12),)),
        (
            lambda a, b: kernels.rms_norm(a.transpose(0, 1), b, 1e-5),
            (torch.randn(6, 2, 8), torch.randn(8)),
        ),
    ]:
        _assert_native_equals_torch_ops(monkeypatch, fn, inputs)


def test_native_kernels_are_deterministic_whatever_the_thread_count(native):
    cos, sin = tables(32, 64, torch.float32)
    inputs = {
        "rms": (
            lambda a, b: kernels.rms_norm(a, b, 1e-5),
            (torch.randn(12, 64, 128), torch.randn(128)),
        ),
        "swiglu": (kernels.swiglu, (torch.randn(12, 64, 688),)),
        "rope": (lambda t: kernels.rotary_qkv(t, cos, sin, 4), (torch.randn(12, 64, 8, 32),)),
    }
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            runs.append({k: _value_and_grads(fn, args) for k, (fn, args) in inputs.items()})
    finally:
        torch.set_num_threads(threads)
    for run in runs[1:]:
        for key, (outs, grads) in run.items():
            for a, b in zip(outs + grads, runs[0][key][0] + runs[0][key][1], strict=True):
                assert torch.equal(a, b), key


def test_native_kernels_are_used_only_for_float32_on_cpu(native):
    assert kernels._native(torch.zeros(2)) is native
    assert kernels._native(torch.zeros(2), torch.zeros(2, dtype=torch.float64)) is None
    assert kernels._native(torch.zeros(2, dtype=torch.bfloat16)) is None


def test_cpu_kernels_can_be_switched_off(monkeypatch):
    monkeypatch.setenv(cpu_ops.ENV, "0")
    cpu_ops.load.cache_clear()
    try:
        assert cpu_ops.load() is None
    finally:
        cpu_ops.load.cache_clear()


def test_a_built_kernel_loads_in_a_new_process_without_build_tools(native):
    import os
    import subprocess
    import sys

    code = "from kiln.components.pretrain import cpu_ops; m = cpu_ops.load(); print(m.__name__)"
    env = {**os.environ, "PATH": "/nonexistent"}  # no compiler, no ninja
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == native.__name__
