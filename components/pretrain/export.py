"""Hugging Face Llama format (Qwen3 with QK-norm): export a trained model, import one back.

`export_hf(model, out_dir, tokenizer_json)` writes what `transformers.AutoModelForCausalLM` and vLLM
load as is:

    model/config.json              LlamaForCausalLM config (Qwen3ForCausalLM with model.qk_norm)
    model/generation_config.json
    model/model.safetensors        weights under HF names (ours already match; `model.` prefix added)
    model/tokenizer.json           (+ tokenizer_config.json / special_tokens_map.json)

Our parameter layout (including rotate-half RoPE) is HF's, except that q/k/v and gate/up are stored
fused; export splits them by rows and import concatenates them. No permutation is involved.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from kiln.components.common.config import ModelConfig
from kiln.components.pretrain import checkpoint as ckpt
from kiln.components.pretrain.model import Llama, ffn_dim

EOT = "<|endoftext|>"


def hf_config(
    cfg: ModelConfig, eos_id: int | None = None, dtype: str = "float32", bos_id: int | None = None
) -> dict:
    """The `config.json` of our model: Llama's, or Qwen3's when it has QK-norm (Qwen3 is Llama
    plus per-head q/k RMSNorm; the other fields mean the same)."""
    family = (
        {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "use_sliding_window": False}
        if cfg.qk_norm
        else {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
    )
    return {
        **family,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": ffn_dim(cfg),
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.dim // cfg.n_heads,
        "hidden_act": cfg.mlp_act,
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "initializer_range": cfg.init_std,
        "bos_token_id": eos_id if bos_id is None else bos_id,
        "eos_token_id": eos_id,
        "torch_dtype": dtype,
        "use_cache": True,
    }


def _qkv_rows(cfg: ModelConfig) -> list[int]:
    hd = cfg.dim // cfg.n_heads
    return [cfg.n_heads * hd, cfg.n_kv_heads * hd, cfg.n_kv_heads * hd]


def to_hf_names(state_dict: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict under HF Llama names: fused projections split by rows, `model.` prefix."""
    out = {}
    for name, tensor in state_dict.items():
        prefix = "" if name == "lm_head.weight" else "model."
        if name.endswith("self_attn.qkv_proj.weight"):
            base = name.removesuffix("qkv_proj.weight")
            for part, w in zip("qkv", tensor.split(_qkv_rows(cfg)), strict=True):
                out[f"{prefix}{base}{part}_proj.weight"] = w
        elif name.endswith("mlp.gate_up_proj.weight"):
            base = name.removesuffix("gate_up_proj.weight")
            gate, up = tensor.chunk(2)
            out[f"{prefix}{base}gate_proj.weight"], out[f"{prefix}{base}up_proj.weight"] = gate, up
        else:
            out[prefix + name] = tensor
    return out


def from_hf_names(weights: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """HF Llama weights under our names: q/k/v and gate/up concatenated by rows."""
    state = {
        (k if k == "lm_head.weight" else k.removeprefix("model.")): v for k, v in weights.items()
    }
    for i in range(cfg.n_layers):
        attn, mlp = f"layers.{i}.self_attn.", f"layers.{i}.mlp."
        parts = [state.pop(f"{attn}{p}_proj.weight", None) for p in "qkv"]
        if all(p is not None for p in parts):
            state[f"{attn}qkv_proj.weight"] = torch.cat(parts)
        gate, up = (
            state.pop(f"{mlp}gate_proj.weight", None),
            state.pop(f"{mlp}up_proj.weight", None),
        )
        if gate is not None and up is not None:
            state[f"{mlp}gate_up_proj.weight"] = torch.cat([gate, up])
    return state


def export_hf(
    state_dict: dict[str, torch.Tensor],
    cfg: ModelConfig,
    out_dir: str | Path,
    tokenizer_json: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    chat_template: str | None = None,
    eos_token: str = EOT,
) -> Path:
    """Write a Hugging Face Llama model directory from our state dict.

    A chat model passes its Jinja `chat_template` (saved in tokenizer_config.json, where
    `apply_chat_template` reads it) and its end-of-turn `eos_token`, which ends generation.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = {}
    for name, tensor in to_hf_names(state_dict, cfg).items():
        if cfg.tie_embeddings and name == "lm_head.weight":
            continue  # HF re-ties it from the embedding
        weights[name] = tensor.detach().to("cpu", dtype).contiguous()
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    eos_id = bos_id = None
    if tokenizer_json:
        shutil.copyfile(tokenizer_json, out / "tokenizer.json")
        vocab = json.loads(Path(tokenizer_json).read_text()).get("added_tokens", [])
        ids = {t["content"]: t["id"] for t in vocab}
        eos_id, bos_id = ids.get(eos_token), ids.get(EOT)
        special = (
            {"bos_token": EOT, "eos_token": eos_token, "unk_token": EOT}
            if eos_id is not None and EOT in ids
            else {}
        )
        (out / "tokenizer_config.json").write_text(
            json.dumps(
                {
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "model_max_length": cfg.max_seq_len,
                    "clean_up_tokenization_spaces": False,
                    **special,
                    **({"chat_template": chat_template} if chat_template else {}),
                },
                indent=2,
            )
        )
        (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    dtype_name = str(dtype).removeprefix("torch.")
    (out / "config.json").write_text(
        json.dumps(hf_config(cfg, eos_id, dtype_name, bos_id), indent=2)
    )
    gen = {"do_sample": True, "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 256}
    if eos_id is not None:
        gen.update(bos_token_id=eos_id if bos_id is None else bos_id, eos_token_id=eos_id)
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2))
    return out


def export_checkpoint(
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    tokenizer_json: str | Path | None = None,
    chat_template: str | None = None,
    eos_token: str = EOT,
) -> Path:
    """Export a training checkpoint (`step_N/`) to a Hugging Face model directory (a chat
    model with its template and end-of-turn token, see `export_hf`)."""
    from kiln.components.common.config import from_dict

    parts = ckpt.read_checkpoint(checkpoint_dir)
    cfg = from_dict(parts["config"]).model
    return export_hf(
        parts["model"],
        cfg,
        out_dir,
        tokenizer_json,
        chat_template=chat_template,
        eos_token=eos_token,
    )


def config_from_hf(hf: dict) -> ModelConfig:
    """Our ModelConfig from a Hugging Face Llama or Qwen3 `config.json` mapping."""
    if hf.get("model_type") not in ("llama", "qwen3"):
        raise ValueError(
            f"expected a llama or qwen3 config, got model_type={hf.get('model_type')!r}"
        )
    if hf.get("use_sliding_window"):
        raise ValueError("sliding-window attention (use_sliding_window) is not supported")
    if hf.get("hidden_act", "silu") not in ("silu", "relu2"):
        raise ValueError(f"hidden_act {hf['hidden_act']!r} is not supported (silu or relu2)")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise ValueError("attention or MLP biases are not supported")
    heads = hf["num_attention_heads"]
    if hf.get("head_dim", hf["hidden_size"] // heads) != hf["hidden_size"] // heads:
        raise ValueError("head_dim != hidden_size / num_attention_heads is not supported")
    if hf.get("rope_scaling"):
        raise ValueError(f"rope_scaling {hf['rope_scaling']!r} is not supported")
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        dim=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=heads,
        n_kv_heads=hf.get("num_key_value_heads", heads),
        ffn_dim=hf["intermediate_size"],
        max_seq_len=hf["max_position_embeddings"],
        rope_theta=float(
            hf.get("rope_theta", (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0))
        ),
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        qk_norm=hf["model_type"] == "qwen3",
        mlp_act=hf.get("hidden_act", "silu"),
    )


def import_hf(model_dir: str | Path) -> Llama:
    """Load a Hugging Face Llama directory (ours or any compatible one) into our model."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(
            f"{model_dir}/config.json not found: not a Hugging Face model directory"
        )
    cfg = config_from_hf(json.loads((model_dir / "config.json").read_text()))
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {model_dir}")
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        weights.update(load_file(f))
    state = {k: v.float() for k, v in from_hf_names(weights, cfg).items()}
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    model = Llama(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{model_dir}: weights do not match the config (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return model
