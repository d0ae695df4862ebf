"""What every config section is made of: fields with help and limits, checked on construction.

    @dataclass
    class OptimConfig(Section):
        KEY = "optim"
        lr: float = setting(3e-4, "Peak learning rate.", gt=0)
        schedule: Literal["cosine", "constant"] = setting("cosine", "Schedule after warmup.")

    OptimConfig(lr=-0.001)    # ValueError: optim.lr must be > 0, got -0.001

A section checks every field in `__post_init__` (and again in `validate()`, which merging and
overrides call): the declared type, `Literal` choices, numeric limits given to `setting`, then
the section's own cross-field rules in `check()`. Messages name the dotted key and the value.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import field
from typing import Any, ClassVar

LIMITS = ("gt", "ge", "lt", "le")
_LIMIT_TEXT = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def setting(
    default: Any,
    help: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> Any:
    """A dataclass field with a help string and optional numeric limits (applied to every
    element of a list of numbers). Mutable defaults go through a factory."""
    limits = {k: v for k, v in zip(LIMITS, (gt, ge, lt, le), strict=True) if v is not None}
    metadata = {"help": help, "limits": limits}
    if isinstance(default, list | dict):
        return field(default_factory=lambda d=default: type(d)(d), metadata=metadata)
    return field(default=default, metadata=metadata)


def section(cls: type) -> Any:
    """A nested section field (built with its defaults)."""
    return field(default_factory=cls)


def choices(typ: Any) -> tuple[str, ...] | None:
    """The allowed values of a `Literal[...]` type, else None."""
    return typing.get_args(typ) if typing.get_origin(typ) is typing.Literal else None


def fail(key: str, expected: str, value: Any) -> typing.NoReturn:
    """Raise the one error shape every check uses: `KEY must be EXPECTED, got VALUE`."""
    raise ValueError(f"{key} must be {expected}, got {value!r}")


def _check_limits(key: str, value: float, limits: dict[str, float]) -> None:
    ok = {
        "gt": lambda lim: value > lim,
        "ge": lambda lim: value >= lim,
        "lt": lambda lim: value < lim,
        "le": lambda lim: value <= lim,
    }
    for name, limit in limits.items():
        if not ok[name](limit):
            fail(key, f"{_LIMIT_TEXT[name]} {limit:g}", value)


def check_value(key: str, value: Any, typ: Any, limits: dict[str, float]) -> None:
    """Check one field's value against its declared type, choices and limits."""
    allowed = choices(typ)
    if allowed is not None:
        if value not in allowed:
            fail(key, f"one of {', '.join(allowed)}", value)
        return
    origin = typing.get_origin(typ)
    if typ is bool:
        if not isinstance(value, bool):
            fail(key, "true or false", value)
    elif typ in (int, float):
        numeric = int if typ is int else int | float
        if isinstance(value, bool) or not isinstance(value, numeric):
            fail(key, f"a{'n' if typ is int else ''} {typ.__name__}", value)
        if not math.isfinite(value):
            fail(key, "a finite number", value)
        _check_limits(key, value, limits)
    elif typ is str:
        if not isinstance(value, str):
            fail(key, "a string", value)
    elif origin is list:
        if not isinstance(value, list):
            fail(key, "a list", value)
        (item,) = typing.get_args(typ)
        for i, element in enumerate(value):
            check_value(f"{key}[{i}]", element, item, limits)
    elif origin is dict:
        if not isinstance(value, dict):
            fail(key, "a mapping", value)
        _, item = typing.get_args(typ)
        for name, element in value.items():
            check_value(f"{key}.{name}", element, item, limits)


def field_types(obj_or_cls: Any) -> dict[str, Any]:
    """{field name: resolved type annotation} of a dataclass (instance or class)."""
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


class Section:
    """Base of the config sections: `KEY` is the section's dotted place in the `Config` tree."""

    KEY: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.validate()

    def key(self, name: str) -> str:
        return f"{self.KEY}.{name}" if self.KEY else name

    def validate(self) -> None:
        """Check every field, nested sections included, then the section's own rules."""
        types_ = field_types(self)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Section):
                value.validate()
            else:
                check_value(self.key(f.name), value, types_[f.name], f.metadata.get("limits", {}))
        self.check()

    def check(self) -> None:
        """Cross-field rules of the section (override; raise through `fail`)."""


# ------------------------------------------------------------------ coercion of files and --set
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def coerce(value: Any, typ: Any, key: str) -> Any:
    """Convert a file value or a `--set` string to the field's declared type (checked later)."""
    allowed = choices(typ)
    if allowed is not None:
        if value not in allowed:
            fail(key, f"one of {', '.join(allowed)}", value)
        return value
    origin = typing.get_origin(typ)
    if typ is bool:
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        if not isinstance(value, bool):
            fail(key, "true or false", value)
        return value
    if typ in (int, float):
        if isinstance(value, bool):
            fail(key, f"a number ({typ.__name__})", value)
        try:
            return typ(float(value)) if typ is float else _to_int(value)
        except (TypeError, ValueError):
            fail(key, f"a number ({typ.__name__})", value)
    if typ is str:
        return str(value)
    if origin is list or typ is list:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            fail(key, "a list", value)
        (item,) = typing.get_args(typ) or (Any,)
        return [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or typ is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                fail(key, "a JSON mapping", value)
        if not isinstance(value, dict):
            fail(key, "a mapping", value)
        _, item = typing.get_args(typ) or (Any, Any)
        return {str(k): coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    if isinstance(typ, types.UnionType) or typ is Any:
        return value
    return value


def _to_int(value: Any) -> int:
    """int('3'), int(3.0); not 3.5 (a silent truncation would hide a typo)."""
    if isinstance(value, str):
        return int(value.strip())
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return int(value)
