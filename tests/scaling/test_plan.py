"""`kiln plan` against published parameter counts, the MFU meter, and what autograd really saves."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from kiln.components.common.config import ModelConfig, load_config
from kiln.components.common.gpus import GPUS
from kiln.components.pretrain.model import Llama
from kiln.components.scaling.plan import (
    activation_bytes,
    block_activation_bytes,
    count_params,
    flops_per_token,
    make_plan,
    memory_per_gpu,
)
from kiln.pipelines.cli import main

# Published shapes and parameter counts (Hugging Face model cards / config.json).
LLAMA3_8B = ModelConfig(
    vocab_size=128256, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_dim=14336,
    max_seq_len=8192, rope_theta=500000.0,
)  # fmt: skip
TINYLLAMA = ModelConfig(
    vocab_size=32000, dim=2048, n_layers=22, n_heads=32, n_kv_heads=4, ffn_dim=5632,
    max_seq_len=2048,
)  # fmt: skip


def test_published_parameter_counts_are_exact():
    assert count_params(LLAMA3_8B).total == 8_030_261_248  # meta-llama/Meta-Llama-3-8B
    assert count_params(TINYLLAMA).total == 1_100_048_384  # TinyLlama-1.1B
    assert count_params(load_config("1b").model).total == 1_100_048_384  # the 1b preset is it
    # GPT-2 small's 12 × 768 shape as a tied LLaMA with Kiln's padded 50304 vocabulary.
    gpt2 = count_params(load_config("gpt2-124m").model)
    assert (gpt2.total, gpt2.head) == (123_587_328, 0)


@pytest.mark.parametrize(
    "cfg",
    [
        LLAMA3_8B,
        TINYLLAMA,
        load_config("gpt2-124m").model,
        ModelConfig(vocab_size=100, dim=96, n_layers=3, n_heads=6, n_kv_heads=2),  # derived ffn
        ModelConfig(vocab_size=100, dim=96, n_layers=3, n_heads=6, n_kv_heads=2, qk_norm=True),
    ],
    ids=["llama3-8b", "tinyllama", "gpt2-124m", "small-derived-ffn", "qk-norm"],
)
def test_counts_and_flops_match_the_model_and_the_mfu_meter(cfg):
    with torch.device("meta"):  # the real module, no memory
        model = Llama(cfg)
    assert count_params(cfg).total == model.num_params()
    assert count_params(cfg).non_embedding == model.num_params(embedding=False)
    assert flops_per_token(cfg, 1024) == model.flops_per_token(1024)


def saved_bytes(cfg: ModelConfig, batch: int, seq: int, bf16: bool, checkpointing: bool) -> int:
    """Bytes of every tensor autograd saves for backward in one training forward (storages
    counted once; parameters, buffers, autocast's weight copies and scalars left out)."""
    torch.manual_seed(0)
    model = Llama(cfg)
    model.checkpoint_layers = checkpointing
    x = torch.randint(0, cfg.vocab_size, (batch, seq))
    y = torch.randint(0, cfg.vocab_size, (batch, seq))
    weights = [*model.parameters(), *model.buffers()]
    own = {t.untyped_storage().data_ptr() for t in weights}
    shapes = {tuple(t.shape[::-1]) for t in weights} | {tuple(t.shape) for t in weights}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        weight_copy = tuple(t.shape) in shapes
        if t.dim() and storage.data_ptr() not in own and not weight_copy:  # () = the loss scale
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.view(-1))
    return sum(seen.values())


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_activation_estimate_is_what_autograd_saves(bf16):
    cfg = ModelConfig(vocab_size=320, dim=96, n_layers=3, n_heads=6, n_kv_heads=2, max_seq_len=64)
    batch, seq = 3, 40
    measured = saved_bytes(cfg, batch, seq, bf16, checkpointing=False)
    # bf16 also re-casts the RoPE tables per layer: (T, hd) twice, a few KB.
    rope = 0 if not bf16 else cfg.n_layers * 2 * seq * (cfg.dim // cfg.n_heads) * 2
    assert measured == activation_bytes(cfg, batch * seq, bf16, checkpointing=False) + rope
    # With checkpointing only the blocks' inputs stay; one block comes back during its backward.
    kept = saved_bytes(cfg, batch, seq, bf16, checkpointing=True)
    estimate = activation_bytes(cfg, batch * seq, bf16, checkpointing=True)
    assert kept == estimate - block_activation_bytes(cfg, batch * seq, bf16)
    assert estimate < measured / 2


def test_checkpointing_changes_memory_not_results():
    cfg = ModelConfig(vocab_size=320, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=32)
    x = torch.randint(0, 320, (2, 32))
    grads = []
    for on in (False, True):
        torch.manual_seed(0)
        model = Llama(cfg)
        model.checkpoint_layers = on
        F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten()).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


def test_training_state_is_16_bytes_per_parameter_and_fsdp_shards_it():
    cfg = load_config("1b", overrides=[f"model.{k}={v}" for k, v in vars(LLAMA3_8B).items()])
    n = count_params(cfg.model).total
    ddp = memory_per_gpu(cfg, 8, "ddp", checkpointing=False, bf16=False)
    assert ddp.weights + ddp.gradients + ddp.optimizer == 16 * n  # ≈ 128 GB: no 80 GB GPU
    fsdp = memory_per_gpu(cfg, 8, "fsdp", checkpointing=True, bf16=False)
    assert fsdp.gradients + fsdp.optimizer == 12 * n // 8
    plan = make_plan(cfg, gpus=8, gpu="h100")
    assert not plan.fits["ddp"] and plan.smallest_fit["ddp"] is None
    assert plan.fits["fsdp+ckpt"] and plan.smallest_fit["fsdp+ckpt"] <= 8


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_optimizer_memory_is_the_real_optimizers_state(name):
    from kiln.components.pretrain.optim import build_optimizers

    cfg = load_config("small", overrides=[f"optim.name={name}", "model.vocab_size=512"])
    model = Llama(cfg.model)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizers = build_optimizers(model, cfg.optim, torch.device("cpu"))
    for opt in optimizers:
        opt.step()
    real = sum(
        t.numel() * t.element_size()
        for opt in optimizers
        for state in opt.state.values()
        for key, t in state.items()
        if key != "step"
    )
    assert memory_per_gpu(cfg, 1, "ddp", checkpointing=False, bf16=False).optimizer == real


def test_plan_says_fsdp_refuses_muon(capsys):
    plan = make_plan(load_config("small"), gpus=2, gpu="h100")
    assert plan.optimizer == "muon" and plan.fits["ddp"]
    assert not plan.fits["fsdp"] and plan.smallest_fit["fsdp+ckpt"] is None
    assert main(["plan", "--preset", "small"]) == 0
    out = capsys.readouterr().out
    assert "Muon for the blocks' matrices" in out and "refused under FSDP2" in out
    assert main(["plan", "--preset", "small", "--set", "optim.name=adamw", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["optimizer"] == "adamw" and data["fits"]["fsdp"]


def test_kiln_plan_json_time_is_flops_over_gpus_peak_and_mfu(capsys):
    args = ["plan", "--preset", "gpt2-124m", "--gpus", "8", "--gpu-type", "h100", "--mfu", "0.4"]
    assert main([*args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    cfg = load_config("gpt2-124m")
    tokens = cfg.train.max_steps * cfg.train.tokens_per_step
    assert plan["params"]["total"] == 123_587_328
    assert plan["train_tokens"] == tokens
    flops = (6 * 123_587_328 + 12 * 12 * 12 * 64 * 1024) * tokens
    assert plan["train_flops"] == pytest.approx(flops, rel=1e-12)
    assert plan["hours"] * 3600 == pytest.approx(flops / (8 * 989e12 * 0.4), rel=0.01)
    assert GPUS["h100"].peak_bf16 == 989e12
    assert plan["chinchilla_tokens"] == 20 * 123_587_328
    assert main(args) == 0  # the table
    table = capsys.readouterr().out
    assert "123,587,328" in table and "fsdp+ckpt" in table


def test_bad_plan_arguments_are_one_line_errors(capsys):
    assert main(["plan", "--gpus", "0"]) == 2
    assert "--gpus must be at least 1" in capsys.readouterr().err
    assert main(["plan", "--mfu", "1.5"]) == 2
    assert "--mfu must be in (0, 1]" in capsys.readouterr().err
