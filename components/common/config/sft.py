"""Config section of supervised fine-tuning: where the base model and the conversations come from."""

from __future__ import annotations

from dataclasses import dataclass

from kiln.components.common.config.fields import Section, fail, setting


@dataclass
class SFTConfig(Section):
    """Supervised fine-tuning of a base model on conversations (`kiln sft`)."""

    KEY = "sft"

    base: str = setting(
        "",
        "Base model to fine-tune: models:/NAME@ALIAS or models:/NAME/VERSION (the registry), a "
        "Hugging Face model directory, or an s3:// URI of one (downloaded sha256-verified).",
    )
    epochs: float = setting(
        3.0,
        "Passes over the training conversations; sets the number of optimizer steps from the "
        "packed data (0 = train.max_steps).",
        ge=0,
    )
    val_fraction: float = setting(
        0.1, "Share of conversations held out for validation (by content hash).", ge=0, lt=1
    )
    min_val: int = setting(
        8, "Hold out at least this many conversations when there are enough (0 = none).", ge=0
    )
    max_message_chars: int = setting(
        100_000, "Reject a conversation with a message longer than this many characters.", ge=1
    )
    system_prompt: str = setting(
        "", "System message put first in conversations that have none ('' = none added)."
    )

    def check(self) -> None:
        if self.base != self.base.strip():
            fail("sft.base", "a model URI or directory without surrounding spaces", self.base)
