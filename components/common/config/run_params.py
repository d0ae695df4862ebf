"""The parameters a pipeline run starts with, defined once.

The pipeline (`pipelines/pretrain.py`), its `prepare` step, the local runner (`kiln run`) and
`kiln submit` all take these; the CLI options are generated from the fields below:

    params = RunParams(preset="tiny", overrides=["train.max_steps=50"], workers=2)
    cfg = params.resolve()                  # preset + overrides, then the parameters that are set
    pipeline(corpus_uri=..., **params.pipeline_arguments())

KFP needs the pipeline's and the `prepare` component's parameters spelled out as Python
parameters; a test keeps their names and defaults equal to these fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from kiln.components.common.config.loading import load_config, with_changes
from kiln.components.common.config.presets import PRESETS
from kiln.components.common.config.tree import Config


def param(default: Any, help: str, *, flag: str = "", metavar: str | None = None) -> Any:
    """A run parameter: its help (CLI and pipeline docs) and, optionally, its CLI flag."""
    metadata = {"help": help, "flag": flag, "metavar": metavar}
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=metadata)
    return field(default=default, metadata=metadata)


def parse_overrides(overrides: str | list[str]) -> list[str]:
    """Overrides as a list, a JSON list (`'["train.max_steps=50"]'`) or newline/semicolon
    separated text."""
    if isinstance(overrides, list):
        return list(overrides)
    text = overrides.strip()
    if not text:
        return []
    if text.startswith("["):
        items = json.loads(text)
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ValueError(
                f"overrides: expected a JSON list of 'section.key=value' strings, got {text!r}"
            )
        return items
    return [i.strip() for i in text.replace(";", "\n").splitlines() if i.strip()]


@dataclass
class RunParams:
    """What a pipeline run is started with; set parameters win over the preset and overrides."""

    preset: str = param("tiny", f"named starting config: {', '.join(PRESETS)}")
    overrides: list[str] = param(
        [],
        "config override `section.key=value`, repeatable (`kiln config --fields` lists keys)",
        flag="--set",
        metavar="SECTION.KEY=VALUE",
    )
    model_name: str = param(
        "", "registered model name (tracking.model_name); '' = the config's", metavar="NAME"
    )
    s3_bucket: str = param(
        "",
        "bucket for artifacts, stored under s3://BUCKET/kiln (storage.root); '' = the data "
        "connection's AWS_S3_BUCKET",
        metavar="BUCKET",
    )
    mlflow_uri: str = param(
        "", "MLflow tracking URI (tracking.uri); '' = $MLFLOW_TRACKING_URI", metavar="URI"
    )
    ray_address: str = param(
        "",
        "Ray cluster for training (dist.ray_address): http://HEAD:8265 submits a Ray job; "
        "'' = train in the pretrain step's own process or pod",
        metavar="URL",
    )
    workers: int = param(
        0,
        "Ray Train workers (dist.workers); 0 = one plain process without Ray, -1 = the config's",
        metavar="N",
    )
    gpus_per_worker: int = param(
        0,
        "GPUs per training worker (> 0 sets dist.use_gpu; also the training step's GPU "
        "request); 0 = CPU workers",
        metavar="N",
    )
    run_id: str = param("", "an existing MLflow run to write to; '' = open a new one", metavar="ID")

    def __post_init__(self) -> None:
        if self.preset and self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        self.overrides = parse_overrides(self.overrides)

    # ------------------------------------------------------------------------ the config
    def changes(self) -> dict[str, Any]:
        """The config fields these parameters set: `{"dist.workers": 2, ...}`."""
        out: dict[str, Any] = {}
        if self.model_name:
            out["tracking.model_name"] = self.model_name
        if self.s3_bucket:
            out["storage.root"] = f"s3://{self.s3_bucket.removeprefix('s3://').strip('/')}/kiln"
        if self.mlflow_uri:
            out["tracking.uri"] = self.mlflow_uri
        if self.workers >= 0:
            out["dist.workers"] = self.workers
        if self.gpus_per_worker >= 0:
            out["dist.use_gpu"] = self.gpus_per_worker > 0
        if self.ray_address:
            out["dist.ray_address"] = self.ray_address
        return out

    def resolve(self) -> Config:
        """The run's validated Config: preset, overrides, then the parameters that are set."""
        return with_changes(load_config(self.preset or None, None, self.overrides), self.changes())

    # ------------------------------------------------------------------ pipeline and CLI
    def pipeline_arguments(self) -> dict[str, Any]:
        """The pipeline's (and `prepare`'s) arguments: overrides as a JSON list ('' when none)."""
        args = dataclasses.asdict(self)
        args["overrides"] = json.dumps(self.overrides) if self.overrides else ""
        return args

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser, defaults: RunParams | None = None) -> None:
        """One CLI option per field (`--set` for overrides), with its help and `defaults`."""
        defaults = defaults or RunParams()
        for f in dataclasses.fields(RunParams):
            flag = f.metadata["flag"] or f"--{f.name.replace('_', '-')}"
            default = getattr(defaults, f.name)
            help_text = f.metadata["help"]
            if default not in ("", []):
                help_text += f" (default: {default})"
            kwargs: dict[str, Any] = {"dest": f.name, "help": help_text}
            if f.name == "overrides":
                kwargs.update(action="append", default=list(default))
            elif f.name == "preset":
                kwargs.update(choices=sorted(PRESETS), default=default)
            else:
                kwargs.update(type=type(default), default=default)
            if f.metadata["metavar"]:
                kwargs["metavar"] = f.metadata["metavar"]
            parser.add_argument(flag, **kwargs)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunParams:
        """The RunParams of options added by `add_arguments`."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})
