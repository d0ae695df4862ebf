"""The whole config: one section per concern, and the rules that span sections."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from kiln.components.common.config.data import IngestConfig, TokenizerConfig
from kiln.components.common.config.fields import Section, fail, section
from kiln.components.common.config.platform import (
    EvalConfig,
    PublishConfig,
    StorageConfig,
    TrackingConfig,
)
from kiln.components.common.config.sft import SFTConfig
from kiln.components.common.config.training import (
    DataConfig,
    DistConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)


@dataclass
class Config(Section):
    """Everything a Kiln run needs, one section per concern."""

    model: ModelConfig = section(ModelConfig)
    data: DataConfig = section(DataConfig)
    optim: OptimConfig = section(OptimConfig)
    train: TrainConfig = section(TrainConfig)
    dist: DistConfig = section(DistConfig)
    tokenizer: TokenizerConfig = section(TokenizerConfig)
    ingest: IngestConfig = section(IngestConfig)
    storage: StorageConfig = section(StorageConfig)
    tracking: TrackingConfig = section(TrackingConfig)
    eval: EvalConfig = section(EvalConfig)
    publish: PublishConfig = section(PublishConfig)
    sft: SFTConfig = section(SFTConfig)

    def check(self) -> None:
        """Rules between sections (each section has checked its own fields already)."""
        if self.data.seq_len > self.model.max_seq_len:
            fail(
                "data.seq_len", f"<= model.max_seq_len={self.model.max_seq_len}", self.data.seq_len
            )
        t, per_micro = self.train, self.train.micro_batch_size * self.data.seq_len
        if t.tokens_per_step % per_micro:
            fail(
                "train.tokens_per_step",
                f"0 or a multiple of train.micro_batch_size × data.seq_len = {per_micro}",
                t.tokens_per_step,
            )

        if not self.optim.supports(self.dist.strategy):
            fail("optim.name", "adamw with dist.strategy=fsdp (use ddp for muon)", "muon")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def describe_fields(obj: Any = None, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, value, help) for every field of `obj` (default: a `Config()`), in order:
    the reference `kiln config --fields` prints for the resolved config."""
    obj = obj if obj is not None else Config()
    rows = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            rows += describe_fields(value, f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", value, f.metadata.get("help", "")))
    return rows
