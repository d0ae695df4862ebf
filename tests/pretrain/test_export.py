"""Hugging Face compatibility: `transformers` loads our export as is and computes the same logits."""

import dataclasses
import json

import pytest
import torch

from kiln.components.common.config import ModelConfig, load_config
from kiln.components.common.config.presets import PRESETS
from kiln.components.pretrain import pretrain
from kiln.components.pretrain.export import export_checkpoint, export_hf, import_hf
from kiln.components.pretrain.model import Llama

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize(
    "tied,qk_norm,act,arch",
    [(False, False, "silu", "LlamaForCausalLM"), (True, False, "silu", "LlamaForCausalLM"),
     (False, True, "silu", "Qwen3ForCausalLM"), (False, False, "relu2", "LlamaForCausalLM")],
)  # fmt: skip
def test_transformers_loads_export_with_matching_logits(
    tmp_path, tokens_dir, tied, qk_norm, act, arch
):
    cfg = ModelConfig(
        vocab_size=320,
        dim=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        max_seq_len=64,
        tie_embeddings=tied,
        rope_theta=500000.0,
        qk_norm=qk_norm,
        mlp_act=act,
    )
    ours = Llama(cfg).eval()
    ours.init_weights(seed=3)
    if qk_norm:  # gains away from 1, so that a misplaced or missing norm shows in the logits
        with torch.no_grad():
            for name, p in ours.named_parameters():
                if name.endswith(("q_norm.weight", "k_norm.weight")):
                    p.uniform_(0.5, 1.5)
    out = export_hf(ours.state_dict(), cfg, tmp_path / "model", tokens_dir / "tokenizer.json")
    assert {p.name for p in out.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
    }
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    assert type(hf).__name__ == arch
    x = torch.randint(0, 320, (2, 48))
    with torch.no_grad():
        diff = (ours(x) - hf(x).logits).abs().max().item()
    assert diff < 1e-4
    back = import_hf(out).eval()
    with torch.no_grad():
        assert torch.equal(back(x), ours(x))
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert (
        tok.eos_token == "<|endoftext|>"
        and tok.decode(tok("hello world")["input_ids"]) == "hello world"
    )


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_architecture_exports_with_matching_logits(tmp_path, tokens_dir, name):
    """Each shipped preset's architecture choices (QK-norm, MLP gate, tied embeddings, the
    grouped-query ratio, RoPE base), at a width a test can afford."""
    shipped = load_config(name).model
    ratio = shipped.n_heads // shipped.n_kv_heads
    kv = 2 if ratio <= 4 else 1
    cfg = dataclasses.replace(
        shipped, vocab_size=320, dim=16 * ratio * kv, n_layers=2, n_heads=ratio * kv,
        n_kv_heads=kv, ffn_dim=0, max_seq_len=64, dropout=0.0,
    )  # fmt: skip
    ours = Llama(cfg).eval()
    ours.init_weights(seed=5)
    with torch.no_grad():  # norm gains away from 1: a misplaced or missing norm shows
        for p_name, p in ours.named_parameters():
            if "norm" in p_name:
                p.uniform_(0.5, 1.5)
    out = export_hf(ours.state_dict(), cfg, tmp_path / "model", tokens_dir / "tokenizer.json")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    x = torch.randint(0, 320, (2, 48))
    with torch.no_grad():
        assert (ours(x) - hf(x).logits).abs().max().item() < 1e-4


def test_import_a_transformers_model_and_trained_checkpoint(tmp_path, tokens_dir, tiny_cfg):
    hf_cfg = transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = import_hf(tmp_path / "hf").eval()
    x = torch.randint(0, 128, (1, 30))
    with torch.no_grad():
        assert (ours(x) - hf(x).logits).abs().max().item() < 1e-4
    tiny_cfg.train.max_steps = 3
    result = pretrain(tiny_cfg, tokens_dir, tmp_path / "run")
    model_dir = export_checkpoint(
        result.checkpoint, tmp_path / "run/model", tokens_dir / "tokenizer.json"
    )
    assert json.loads((model_dir / "config.json").read_text())["vocab_size"] % 8 == 0
    assert import_hf(model_dir).cfg.n_kv_heads == tiny_cfg.model.n_kv_heads


def test_import_rejects_non_llama(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="expected a llama or qwen3 config"):
        import_hf(tmp_path)
