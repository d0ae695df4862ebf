"""Run the Kiln pipeline on this machine with the KFP local runner (what `kiln run` does).

    result = run_local(LocalRun(RunParams(preset="tiny", workers=1)))   # built-in corpus
    print(result.model_dir, result.registered, result.sample)

The SAME pipeline that `kiln compile` writes runs here, each step in a subprocess
(`kfp.local.SubprocessRunner(use_venv=False)`, i.e. this interpreter with Kiln installed):

- MLflow: `mlflow_uri`, else $MLFLOW_TRACKING_URI, else sqlite:///WORKDIR/mlflow.db;
- S3: the real endpoint when AWS_S3_ENDPOINT is set (with AWS_S3_BUCKET), else the storage
  layer's local stand-in (KILN_S3_LOCAL_ROOT=WORKDIR/s3, bucket `kiln`): same URIs, same sha256
  records;
- Ray: a fresh local Ray started inside the pretrain step when `workers` > 0 (RAY_ADDRESS=local
  unless RAY_ADDRESS is set), with token authentication (RAY_AUTH_MODE=token unless set);
- step outputs (KFP artifacts) under WORKDIR/kfp/kiln-pretrain-<time>/<step>/.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.components.common.config import RunParams
from kiln.components.common.pipeline_run import WORKDIR_ENV
from kiln.components.common.tracking import (
    default_tracking_uri,
    end_pipeline_run,
    start_pipeline_run,
)
from kiln.pipelines.options import LOCAL_DEFAULTS
from kiln.pipelines.pretrain import PIPELINE_NAME, build_pipeline

LOCAL_BUCKET = "kiln"


@dataclass
class LocalRun:
    """One local pipeline run (see `kiln run --help`): the pipeline's run parameters, plus
    where it works and what it reads."""

    params: RunParams = field(default_factory=lambda: dataclasses.replace(LOCAL_DEFAULTS))
    workdir: str = "kiln-work"
    data: str = ""  # '' = the built-in corpus (pipelines/corpus.py)
    baseline_model: str = ""
    pipeline: str = "pretrain"  # or "sft": fine-tune sft.base on conversations (`data`)


@dataclass
class LocalResult:
    """Where everything went."""

    run_dir: Path
    model_dir: Path
    mlflow_uri: str
    run_id: str
    eval: dict[str, Any]
    published: dict[str, Any]
    seconds: float

    @property
    def sample(self) -> str:
        samples = self.eval.get("samples") or []
        if not samples:
            return ""
        first = samples[0]
        return first["text"] if "text" in first else f"{first['prompt']} → {first['answer']}"


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the steps (subprocesses inherit them), restore afterwards."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def local_env(workdir: Path, mlflow_uri: str = "") -> dict[str, str]:
    """The environment the steps run with: tracking URI, workdir, S3 endpoint or stand-in."""
    env = {
        WORKDIR_ENV: str(workdir),
        "MLFLOW_TRACKING_URI": mlflow_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or default_tracking_uri(workdir),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # MLflow's INFO lines (creating the store's tables, waiting for a version) say nothing
        # a user acts on; its warnings still show.
        "MLFLOW_LOGGING_LEVEL": os.environ.get("MLFLOW_LOGGING_LEVEL") or "WARNING",
        "RAY_USAGE_STATS_ENABLED": "0",
        # A Ray of its own ("local"), not whatever cluster /tmp/ray points at; an explicit
        # RAY_ADDRESS (the user's cluster) wins. Local workers talk over loopback.
        "RAY_ADDRESS": os.environ.get("RAY_ADDRESS") or "local",
    }
    if env["RAY_ADDRESS"] == "local":
        # The private Ray runs with token authentication, chosen explicitly before Ray is
        # imported, as Ray documents (it then makes and uses a token): otherwise Ray turns it on
        # by itself and warns about that in every run. A mode the user set is kept.
        env["RAY_AUTH_MODE"] = os.environ.get("RAY_AUTH_MODE") or "token"
    if sys.platform == "linux":
        env["GLOO_SOCKET_IFNAME"] = os.environ.get("GLOO_SOCKET_IFNAME") or "lo"
    if not os.environ.get("AWS_S3_ENDPOINT"):
        env["KILN_S3_LOCAL_ROOT"] = str(workdir / "s3")
        env["AWS_S3_BUCKET"] = os.environ.get("AWS_S3_BUCKET") or LOCAL_BUCKET
    return env


def _corpus(workdir: Path) -> str:
    from kiln.pipelines.corpus import write_builtin_corpus

    return str(write_builtin_corpus(workdir / "corpus").resolve())


def _newest_run_dir(root: Path, after: float, name: str = PIPELINE_NAME) -> Path:
    runs = [p for p in root.glob(f"{name}-*") if p.stat().st_mtime >= after - 1]
    if not runs:
        raise RuntimeError(f"the local pipeline left no run directory under {root}")
    return max(runs, key=lambda p: p.stat().st_mtime)


class _DropKfpCleanup(logging.Filter):
    """KFP's local runner reports removing its temp workspace at INFO on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Cleaned up workspace")


@contextlib.contextmanager
def _quiet_kfp_cleanup() -> Iterator[None]:
    root, drop = logging.getLogger(), _DropKfpCleanup()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _run_pipeline(
    pipeline: Any, params: RunParams, workdir: Path, data: str, run_name: str, **arguments: Any
) -> tuple[RunParams, dict[str, str], float]:
    """Run a Kiln pipeline function with the KFP local runner in `workdir`; returns the run
    parameters used (with the MLflow run opened here), the steps' environment and the start."""
    import kfp.local

    overrides = list(params.overrides)
    if not data:  # a few hundred documents: hold out 5% so validation has enough text
        overrides.insert(0, "ingest.val_fraction=0.05")
    env = local_env(workdir, params.mlflow_uri)
    params = dataclasses.replace(params, overrides=overrides, mlflow_uri=env["MLFLOW_TRACKING_URI"])
    t0 = time.time()
    with _env(env):
        cfg = params.resolve()
        corpus = data or _corpus(workdir)
        if not params.run_id:
            params.run_id = start_pipeline_run(
                cfg, workdir, run_name=run_name, tags={"mode": "local"}
            )
        kfp.local.init(
            runner=kfp.local.SubprocessRunner(use_venv=False),
            pipeline_root=str(workdir / "kfp"),
            raise_on_error=True,
        )
        try:
            with warnings.catch_warnings(), _quiet_kfp_cleanup():
                # The local runner runs the steps with this Python, not in their images, and
                # ignores cluster resources: both warnings are expected here.
                warnings.filterwarnings("ignore", message=".*base image", category=RuntimeWarning)
                warnings.filterwarnings("ignore", message=".*no effect in the current local runner")
                pipeline(corpus_uri=corpus, **arguments, **params.pipeline_arguments())
        except BaseException:
            end_pipeline_run(cfg, params.run_id, "FAILED", workdir)
            raise
    return params, env, t0


def run_local(run: LocalRun) -> LocalResult:
    """Run the whole pipeline locally; raises when a step fails (its log is printed above).

    The pipeline's MLflow run is opened here first, so that a failed run is marked FAILED.
    """
    workdir = Path(run.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if run.pipeline == "sft":
        return _run_sft(run, workdir)
    params, env, t0 = _run_pipeline(
        build_pipeline(), run.params, workdir, run.data, "kiln-run-local",
        baseline_model=run.baseline_model,
    )  # fmt: skip
    run_dir = _newest_run_dir(workdir / "kfp", t0)
    eval_report = json.loads((run_dir / "evaluate" / "report" / "eval.json").read_text())
    published = json.loads((run_dir / "publish" / "published" / "publish.json").read_text())
    return LocalResult(
        run_dir=run_dir,
        model_dir=run_dir / "pretrain" / "trained" / "model",
        mlflow_uri=env["MLFLOW_TRACKING_URI"],
        run_id=params.run_id,
        eval=eval_report,
        published=published,
        seconds=time.time() - t0,
    )


def _run_sft(run: LocalRun, workdir: Path) -> LocalResult:
    """The fine-tuning pipeline (`kiln run --pipeline sft`), on the built-in conversations
    (questions about the standard library answered by its docstrings) unless `run.data`."""
    from kiln.pipelines.corpus import write_builtin_conversations
    from kiln.pipelines.sft import SFT_PIPELINE_NAME, build_sft_pipeline

    data = run.data or str(write_builtin_conversations(workdir / "corpus").resolve())
    params, env, t0 = _run_pipeline(
        build_sft_pipeline(), run.params, workdir, data, "kiln-sft-local"
    )
    run_dir = _newest_run_dir(workdir / "kfp", t0, SFT_PIPELINE_NAME)
    return LocalResult(
        run_dir=run_dir,
        model_dir=run_dir / "sft" / "trained" / "model",
        mlflow_uri=env["MLFLOW_TRACKING_URI"],
        run_id=params.run_id,
        eval=json.loads((run_dir / "sft-evaluate" / "report" / "eval.json").read_text()),
        published=json.loads((run_dir / "publish" / "published" / "publish.json").read_text()),
        seconds=time.time() - t0,
    )


@dataclass
class SweepResult:
    """Where a local sweep went and what it found (`report` is sweep.json)."""

    run_dir: Path
    report_dir: Path
    mlflow_uri: str
    run_id: str
    report: dict[str, Any]
    seconds: float


def run_sweep_local(
    params: RunParams,
    budgets: str,
    sizes: int = 3,
    spread: float = 3.0,
    target_budget: float = 0.0,
    workdir: str = "kiln-work",
    data: str = "",
    parallel: int = 1,
) -> SweepResult:
    """Run the sweep pipeline locally (`kiln sweep`), `parallel` points at a time; raises when
    a step fails."""
    from kiln.pipelines.options import PipelineOptions
    from kiln.pipelines.sweep import SWEEP_PIPELINE_NAME, build_sweep_pipeline

    root = Path(workdir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    params, env, t0 = _run_pipeline(
        build_sweep_pipeline(PipelineOptions(sweep_parallelism=parallel)), params, root, data,
        "kiln-sweep-local", budgets=budgets,
        sizes=sizes, spread=spread, target_budget=target_budget,
    )  # fmt: skip
    run_dir = _newest_run_dir(root / "kfp", t0, SWEEP_PIPELINE_NAME)
    report_dir = run_dir / "sweep-fit" / "report"
    return SweepResult(
        run_dir=run_dir,
        report_dir=report_dir,
        mlflow_uri=env["MLFLOW_TRACKING_URI"],
        run_id=params.run_id,
        report=json.loads((report_dir / "sweep.json").read_text()),
        seconds=time.time() - t0,
    )
