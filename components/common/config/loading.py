"""Build a Config: preset, then a TOML/YAML/JSON file, then `--set section.key=value` overrides.

Values are converted to each field's type as they are merged (a bad choice is refused on the
spot, naming the allowed values); the whole tree is validated once everything is merged.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any

from kiln.components.common.config.fields import coerce, field_types
from kiln.components.common.config.presets import preset
from kiln.components.common.config.tree import Config

# Keys that were removed, with the setting that replaced them (files and --set name them still).
REPLACED = {"publish.model_name": "tracking.model_name"}


def merge(obj: Any, data: dict[str, Any], where: str = "") -> None:
    """Merge a nested mapping into a dataclass tree in place; unknown keys are an error.

    Call `validate()` on the tree afterwards: fields are only converted here, and cross-field
    rules can only hold once every value is in.
    """
    types_ = field_types(obj)
    for key, value in data.items():
        path = f"{where}{key}"
        if path in REPLACED:
            raise ValueError(
                f"config key {path!r} was removed: set {REPLACED[path]!r} instead "
                f"(the one registered model name)"
            )
        if key not in types_:
            raise ValueError(f"unknown config key {path!r}; valid keys here: {', '.join(types_)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"{path}: expected a section (mapping), got {value!r}")
            merge(current, value, f"{path}.")
        else:
            setattr(obj, key, coerce(value, types_[key], path))


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    *sections, key = dotted.strip().split(".")
    nested: dict[str, Any] = {key: value}
    for name in reversed(sections):
        nested = {name: nested}
    return nested


def apply_override(cfg: Config, item: str) -> None:
    """Apply one `section.key=value` override (validate the tree once all are applied)."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like section.key=value")
    dotted, value = item.split("=", 1)
    merge(cfg, _nested(dotted, value))


def with_changes(cfg: Config, changes: dict[str, Any]) -> Config:
    """A validated copy of `cfg` with `{"dist.workers": 1, ...}` changed; `cfg` stays as it is
    (for values decided at run time, which belong to that run, not to the user's config)."""
    out = copy.deepcopy(cfg)
    for dotted, value in changes.items():
        merge(out, _nested(dotted, value))
    out.validate()
    return out


def read_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML, YAML or JSON config file into a mapping."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text()
    if path.suffix == ".toml":
        return tomllib.loads(text)
    if path.suffix in {".yaml", ".yml"}:
        import yaml

        return yaml.safe_load(text) or {}
    if path.suffix == ".json":
        return json.loads(text)
    raise ValueError(f"{path}: config files must be .toml, .yaml/.yml or .json")


def load_config(
    preset_name: str | None = None,
    file: str | Path | None = None,
    overrides: list[str] | None = None,
) -> Config:
    """Preset, then file, then overrides (later wins); validated.

    The preset is `preset_name`, else the file's top-level `preset` key, else "tiny".
    """
    data = read_file(file) if file else {}
    file_preset = data.pop("preset", None)
    cfg = preset(preset_name or file_preset or "tiny")
    try:
        merge(cfg, data)
    except ValueError as e:
        raise ValueError(f"{file}: {e}") from None
    for item in overrides or []:
        apply_override(cfg, item)
    cfg.validate()
    return cfg


def from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a validated Config saved with `to_dict` (a checkpoint's, a pipeline step's)."""
    data = copy.deepcopy(data)
    publish = data.get("publish")
    if isinstance(publish, dict) and "model_name" in publish:  # saved before the two were one
        name = publish.pop("model_name")  # it took precedence then, so it is the name used
        if name:
            data.setdefault("tracking", {})["model_name"] = name
    cfg = Config()
    merge(cfg, data)
    cfg.validate()
    return cfg


def validate(cfg: Config) -> None:
    """Check every field and the rules between them (what `cfg.validate()` does)."""
    cfg.validate()
