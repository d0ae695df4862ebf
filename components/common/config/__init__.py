"""One configuration system for every Kiln stage.

A `Config` is a tree of dataclasses (one section per concern). It is built from a named preset,
optionally merged with a TOML/YAML file, then with `--set section.key=value` overrides:

    cfg = load_config(preset_name="tiny", file="my.toml", overrides=["train.max_steps=200"])

Every field carries a `help` string (`kiln config --fields` prints it with the resolved value)
and is checked where its section is built and again after merging: types, `Literal` choices,
limits and cross-field rules, with errors that name the key ("optim.lr must be > 0, got -0.001").
Values decided at run time (the vocabulary size from the tokenizer, the worker layout) are never
written back into a Config. The resolved config is saved as JSON with every checkpoint and logged
to the tracker, so a run can always be reproduced.

Layout: `fields` (field helper, checks, coercion), one module per group of sections
(`training`, `data`, `platform`), `tree` (the whole Config), `presets`, `loading` (files and
overrides), `run_params` (the parameters a pipeline run starts with).
"""

from kiln.components.common.config.data import (
    DedupConfig,
    FilterConfig,
    IngestConfig,
    TokenizerConfig,
)
from kiln.components.common.config.fields import Section, setting
from kiln.components.common.config.loading import (
    REPLACED,
    apply_override,
    from_dict,
    load_config,
    merge,
    read_file,
    validate,
    with_changes,
)
from kiln.components.common.config.platform import (
    EvalConfig,
    PublishConfig,
    StorageConfig,
    TrackingConfig,
)
from kiln.components.common.config.presets import PRESETS, preset
from kiln.components.common.config.run_params import RunParams, parse_overrides
from kiln.components.common.config.sft import SFTConfig
from kiln.components.common.config.training import (
    DataConfig,
    DistConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from kiln.components.common.config.tree import Config, describe_fields

__all__ = [
    "PRESETS",
    "REPLACED",
    "Config",
    "DataConfig",
    "DedupConfig",
    "DistConfig",
    "EvalConfig",
    "FilterConfig",
    "IngestConfig",
    "ModelConfig",
    "OptimConfig",
    "PublishConfig",
    "RunParams",
    "SFTConfig",
    "Section",
    "StorageConfig",
    "TokenizerConfig",
    "TrackingConfig",
    "TrainConfig",
    "apply_override",
    "describe_fields",
    "from_dict",
    "load_config",
    "merge",
    "parse_overrides",
    "preset",
    "read_file",
    "setting",
    "validate",
    "with_changes",
]
