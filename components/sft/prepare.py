"""Before fine-tuning: find the base model, give its tokenizer the chat markers, render the data.

    base = resolve_base("models:/kiln-llama@champion", cfg, tmp)   # or a directory, or s3://
    manifest = chat_tokens("out/conversations", base, "out/chat_tokens")

The base is a Hugging Face model directory (what `kiln train` and publish write). Its vocabulary
grows by the chat markers when they are new: ids after the tokenizer's last one, rows of the
embedding (and an untied output head) initialized to the mean of the base tokenizer's rows, so
a marker starts as an "average token" instead of noise. The resized base weights are stored in
the chat tokens directory, so every training worker (and the evaluation of the base) starts from
the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from kiln.components.common.config import Config, ModelConfig
from kiln.components.common.errors import UserError
from kiln.components.common.model_ref import fetch_model
from kiln.components.common.storage import sha256_file
from kiln.components.pretrain.export import import_hf
from kiln.components.pretrain.placement import padded_vocab
from kiln.components.sft.data import FORMAT, MANIFEST, write_split
from kiln.components.sft.template import CHAT_TEMPLATE, chat_ids, render, with_chat_tokens

log = logging.getLogger("kiln.sft")
BASE_WEIGHTS = "base.safetensors"


class BaseModel(NamedTuple):
    """A base model to fine-tune, as a local Hugging Face directory, and where it came from."""

    directory: Path
    uri: str  # what the user named: models:/…, s3://… or a path
    registered: dict[str, str]  # {"name", "version", "run_id", "source"} for models:/ URIs


def resolve_base(
    uri: str, cfg: Config, download_to: str | Path, workdir: str = "kiln-work"
) -> BaseModel:
    """A local directory for `uri`: models:/NAME@ALIAS or models:/NAME/VERSION (through the
    registry), s3://… (downloaded, sha256-verified), or a local directory."""
    if not uri:
        raise ValueError(
            "sft.base is empty: name the model to fine-tune (models:/NAME@ALIAS, a directory or s3://…)"
        )
    directory, source, version = fetch_model(uri, download_to, cfg.tracking.uri, workdir)
    registered: dict[str, str] = {}
    if version is not None:
        registered = {
            "name": version["name"],
            "version": version["version"],
            "run_id": version["mlflow_run_id"],
            "source": source,
        }
    for need in ("config.json", "tokenizer.json"):
        if not (directory / need).is_file():
            raise FileNotFoundError(
                f"{directory}/{need} not found: sft.base must be a Hugging Face model directory "
                "with its tokenizer (what `kiln train` writes under model/)"
            )
    return BaseModel(directory, uri, registered)


def check_base(uri: str, cfg: Config, workdir: str = "kiln-work") -> None:
    """Fail in a second, before any step runs, when `uri` cannot be a base model: an empty
    setting, an unknown registered name, version or alias, or a directory without a model."""
    if not uri:
        raise UserError(
            "sft.base is empty: name the model to fine-tune (--base models:/NAME@ALIAS, a "
            "model directory or s3://…)"
        )
    if uri.startswith("models:/"):
        from kiln.components.common.registry import ModelRegistry

        try:
            ModelRegistry.existing(cfg.tracking.uri, workdir).resolve(uri)
        except ValueError as e:
            raise UserError(f"--base {uri}: {e} (see `kiln models list`)") from None
    elif not uri.startswith(("s3://", "file:")):
        missing = [n for n in ("config.json", "tokenizer.json") if not (Path(uri) / n).is_file()]
        if missing:
            raise UserError(
                f"--base {uri}: not a Hugging Face model directory with its tokenizer (no "
                f"{', '.join(missing)})"
            )


def resize_vocab(
    state: dict[str, torch.Tensor],
    cfg: ModelConfig,
    base_tokens: int,
    new_ids: list[int],
    vocab: int,
) -> dict[str, torch.Tensor]:
    """`state` with `vocab` rows in the embedding and head; rows `new_ids` set to the mean of
    the first `base_tokens` rows (the base tokenizer's own tokens)."""
    out = dict(state)
    names = ["embed_tokens.weight"] + ([] if cfg.tie_embeddings else ["lm_head.weight"])
    for name in names:
        old = state[name]
        rows = old.new_zeros(max(vocab, old.shape[0]), old.shape[1])
        rows[: old.shape[0]] = old
        rows[new_ids] = old[:base_tokens].mean(dim=0)
        out[name] = rows
    if cfg.tie_embeddings:
        out["lm_head.weight"] = out["embed_tokens.weight"]
    return out


def base_state(chat_dir: str | Path, tied: bool) -> dict[str, torch.Tensor]:
    """The resized base weights stored with the rendered conversations (our names), with the
    output head re-tied to the embedding when the model ties them."""
    state = load_file(Path(chat_dir) / BASE_WEIGHTS)
    if tied:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    return state


def _load_split(conversations_dir: Path, split: str) -> list[list[dict]]:
    from kiln.components.sft.conversations import load_conversations

    return load_conversations(conversations_dir, split)


def chat_tokens(
    conversations_dir: str | Path, base: BaseModel, out_dir: str | Path
) -> dict[str, Any]:
    """Write the chat tokens directory (see `sft.data`) and return its manifest."""
    conversations_dir, out = Path(conversations_dir), Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tok = Tokenizer.from_file(str(base.directory / "tokenizer.json"))
    base_tokens = tok.get_vocab_size()
    tok = with_chat_tokens(tok)
    ids = chat_ids(tok)
    new_ids = [i for i in ids if i >= base_tokens]
    tok.save(str(out / "tokenizer.json"))

    model = import_hf(base.directory)
    vocab = max(model.cfg.vocab_size, padded_vocab(tok.get_vocab_size()))
    model_cfg = dataclasses.replace(model.cfg, vocab_size=vocab)
    state = resize_vocab(model.state_dict(), model.cfg, base_tokens, new_ids, vocab)
    if model_cfg.tie_embeddings:
        state.pop("lm_head.weight")
    save_file({k: v.contiguous() for k, v in state.items()}, out / BASE_WEIGHTS)

    files = {
        BASE_WEIGHTS: sha256_file(out / BASE_WEIGHTS),
        "tokenizer.json": sha256_file(out / "tokenizer.json"),
    }
    splits = {}
    for split in ("train", "val"):
        rendered = [
            render(tok, messages, ids) for messages in _load_split(conversations_dir, split)
        ]
        files.update(write_split(out, split, rendered))
        splits[split] = {
            "conversations": len(rendered),
            "tokens": sum(len(r.ids) for r in rendered),
            "trained_tokens": sum(sum(r.mask) for r in rendered),
        }
    stats_path = conversations_dir / "stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    manifest = {
        "format": FORMAT,
        "version": 1,
        "vocab_size": tok.get_vocab_size(),
        "eot_id": tok.token_to_id("<|endoftext|>") or 0,
        "chat_ids": ids._asdict(),
        "chat_template": CHAT_TEMPLATE,
        "conversations_digest": stats.get("digest", ""),
        "base": {
            "uri": base.uri,
            "registered": base.registered,
            "tokens": base_tokens,
            "model": dataclasses.asdict(model_cfg),
        },
        "splits": splits,
        "files": files,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    log.info(
        "chat tokens: %d train / %d val conversations, %d trained tokens, base %s (%d → %d ids)",
        splits["train"]["conversations"],
        splits["val"]["conversations"],
        splits["train"]["trained_tokens"],
        base.uri,
        base_tokens,
        tok.get_vocab_size(),
    )
    return manifest
