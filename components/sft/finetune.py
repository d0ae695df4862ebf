"""Fine-tune a base model on conversations: the library behind `kiln sft` and the sft step.

    summary = finetune("out/conversations", "out/sft", cfg)      # cfg.sft.base names the base

1. the base (`sft.base`: models:/NAME@ALIAS, a directory or s3://…) is resolved and fetched;
2. the conversations are rendered through the chat template with the base tokenizer plus the
   chat markers into `OUTPUT/chat_tokens/` (with the resized base weights);
3. training runs where `cfg.dist` says (one process, local Ray Train workers, a Ray job), with
   the pretraining loop's checkpoints and exact resume: a re-run with the same OUTPUT continues
   from its latest checkpoint;
4. the final checkpoint is exported to `OUTPUT/model/` with the chat template in
   tokenizer_config.json and `<|end|>` as the end-of-turn token.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from kiln.components.common.config import Config
from kiln.components.sft.data import MANIFEST, is_chat_tokens
from kiln.components.sft.prepare import chat_tokens, resolve_base
from kiln.components.sft.template import CHAT_TEMPLATE, END

log = logging.getLogger("kiln.sft")
CHAT_TOKENS = "chat_tokens"


def prepare_chat_tokens(
    conversations_dir: str | Path, output_dir: str | Path, cfg: Config, workdir: str = "kiln-work"
) -> Path:
    """`OUTPUT/chat_tokens`, rendered unless a previous attempt of this run left it (a resumed
    run must train on the very same rows)."""
    out = Path(output_dir) / CHAT_TOKENS
    if is_chat_tokens(out):
        base = json.loads((out / MANIFEST).read_text())["base"]["uri"]
        if base != cfg.sft.base:
            raise ValueError(
                f"{output_dir} was fine-tuning {base}, not sft.base={cfg.sft.base}: use a new output"
            )
        log.info("reusing %s (resuming this run)", out)
        return out
    conversations = Path(conversations_dir)
    if str(conversations_dir).startswith("s3://"):
        from kiln.components.common import storage

        conversations = Path(output_dir) / "conversations"
        storage.download_dir(str(conversations_dir), conversations, verify=True)
    base = resolve_base(cfg.sft.base, cfg, Path(output_dir) / "base", workdir)
    chat_tokens(conversations, base, out)
    return out


def finetune(
    conversations_dir: str | Path,
    output_dir: str | Path,
    cfg: Config,
    run_id: str = "",
    workdir: str = "kiln-work",
) -> dict[str, Any]:
    """Fine-tune `cfg.sft.base` on the conversations; see the module docstring.

    Returns:
        The training summary (checkpoint, model_dir, steps, final_loss) and `chat_tokens`.
    """
    from kiln.components.pretrain.step import train_and_export

    tokens = prepare_chat_tokens(conversations_dir, output_dir, cfg, workdir)
    summary = train_and_export(
        cfg, tokens, output_dir, run_id, chat_template=CHAT_TEMPLATE, eos_token=END
    )
    return {**summary, "chat_tokens": str(tokens)}
