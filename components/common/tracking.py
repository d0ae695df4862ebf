"""Experiment tracking: one small Tracker interface, three implementations, one factory.

    tracker = make_tracker(cfg, rank=rank, workdir="kiln-work")   # NullTracker off rank 0
    tracker.log_params(cfg.to_dict())                            # flattened: "train.max_steps"
    tracker.log_metrics({"loss": loss}, step=step)               # cast to float
    with tracker.system_metrics():                               # MLflow `system/…` while training
        ...
    model_id = tracker.log_model("out/model", "kiln-llama")      # an MLflow 3 LoggedModel
    tracker.finish()

`MlflowTracker` imports mlflow lazily and joins the run named by `MLFLOW_RUN_ID` when set, so every
pipeline step writes to one MLflow run (the step that created a run is the one that ends it).
`FileTracker` writes JSONL and needs nothing. Values of secret-looking environment variables are
masked before anything is logged. This is the only module that imports mlflow; the model
registry (`components/common/registry.py`) reaches MLflow through `mlflow_client` here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from kiln.components.common.errors import UserError, check_reachable

log = logging.getLogger(__name__)

MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|ACCESS_KEY|API_KEY|CREDENTIAL", re.I)


def _secret_values() -> list[str]:
    """Values of env vars whose names look secret (long enough to be worth masking)."""
    return [v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 6]


def redact(text: str) -> str:
    """`text` with every secret-looking env var value replaced by '***'."""
    for secret in _secret_values():
        text = text.replace(secret, "***")
    return text


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping → {"section.key": str(value)} (lists/dicts as JSON), secrets masked."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, list | dict) else str(value)
            out[name] = redact(text)[:MAX_PARAM_CHARS]
    return out


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    """Cast metric values to float (tensors, numpy scalars), dropping what can't be cast."""
    out = {}
    for key, value in metrics.items():
        try:
            out[key] = float(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError):
            log.warning("metric %r=%r is not a number; not logged", key, value)
    return out


class Tracker:
    """What every stage logs to. The base class is the no-op tracker."""

    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        """Log a (nested) mapping of parameters, flattened to dotted keys."""

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Log numeric metrics at an optional step."""

    def log_history(self, rows: Iterable[tuple[int, dict[str, Any]]]) -> None:
        """Log many steps' metrics at once: (step, {name: value}) rows (a replayed train log)."""
        for step, metrics in rows:
            self.log_metrics(metrics, step)

    @contextlib.contextmanager
    def system_metrics(self) -> Iterator[None]:
        """Record the machine's CPU/GPU/memory/disk/network use while the block runs."""
        yield

    def log_model(
        self,
        model_dir: str | Path,
        name: str,
        *,
        params: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        skip: Iterable[str] = (),
    ) -> str | None:
        """Log a model directory as a model of this run; returns its id (None: not supported)."""
        return None

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set string tags (lineage: dataset digest, code version, URIs...)."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Attach a local file (or directory) to the run, under `artifact_path`."""

    def finish(self, status: str = "FINISHED") -> None:
        """End the run (FINISHED | FAILED | KILLED) if this tracker started it."""


class NullTracker(Tracker):
    """Tracking off, or a rank other than 0: every call is a no-op."""


class FileTracker(Tracker):
    """Dependency-free tracker: params.json, tags.json, metrics.jsonl and artifacts/ in `root`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.run_id = self.root.name

    def _merge_json(self, name: str, items: dict[str, str]) -> None:
        path = self.root / name
        data = json.loads(path.read_text()) if path.exists() else {}
        data.update(items)
        path.write_text(json.dumps(data, indent=2, sort_keys=True))

    def log_params(self, params: dict[str, Any]) -> None:
        self._merge_json("params.json", flatten(params))

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._merge_json("tags.json", {k: redact(str(v)) for k, v in tags.items()})

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        row = {"step": step, "time": time.time(), **_floats(metrics)}
        with open(self.root / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        src, dest = Path(path), self.root / "artifacts" / (artifact_path or "")
        dest.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest / src.name, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dest / src.name)

    def finish(self, status: str = "FINISHED") -> None:
        self._merge_json("tags.json", {"status": status})


def default_tracking_uri(workdir: str | Path) -> str:
    """The local MLflow store used when no server is given: sqlite under the workdir."""
    return f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(uri: str = "", workdir: str | Path = "kiln-work") -> str:
    """`uri`, else $MLFLOW_TRACKING_URI, else the local sqlite store under `workdir`."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(workdir)


class StoreMissing(UserError):
    """The local MLflow store that a read-only command was pointed at does not exist."""


def local_store_path(tracking_uri: str) -> Path | None:
    """The sqlite file behind a `sqlite:///…` tracking URI (None for a server)."""
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix) :]) if tracking_uri.startswith(prefix) else None


def check_store(tracking_uri: str) -> None:
    """For readers: fail in seconds, in one line, when there is nothing to read at
    `tracking_uri`, instead of creating an empty local store or retrying a dead server.

    Raises:
        StoreMissing: the local sqlite store does not exist (nothing was tracked there).
        Unreachable: the tracking server does not accept connections.
    """
    local = local_store_path(tracking_uri)
    if local is not None and not local.is_file():
        raise StoreMissing(
            f"no MLflow store at {local}: nothing was tracked there yet (run `kiln run` first, "
            "or pass --tracking-uri / set MLFLOW_TRACKING_URI to your MLflow server)"
        )
    if tracking_uri.startswith(("http://", "https://")):
        check_reachable(tracking_uri, "MLflow tracking server")


def mlflow_client(tracking_uri: str) -> Any:
    """An `MlflowClient` for tracking and registry at `tracking_uri` (imports mlflow lazily)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    local = local_store_path(tracking_uri)
    if local is not None:
        local.parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def is_not_found(error: Exception) -> bool:
    """True when MLflow says a model, version, alias or run does not exist."""
    code = getattr(error, "error_code", "")
    # A missing alias comes back as INVALID_PARAMETER_VALUE "... alias X not found."
    return code == "RESOURCE_DOES_NOT_EXIST" or (
        code == "INVALID_PARAMETER_VALUE" and "not found" in str(error)
    )


class MlflowTracker(Tracker):
    """Logs to an MLflow run: the one in `run_id` / $MLFLOW_RUN_ID (unless `join_env` is off),
    else a new one it owns and ends in `finish`."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str = "kiln",
        run_id: str | None = None,
        run_name: str | None = None,
        join_env: bool = True,
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        self._Metric, self._Param, self._RunTag = Metric, Param, RunTag
        self.tracking_uri = tracking_uri
        self.client = mlflow_client(tracking_uri)
        if not run_id and join_env:
            run_id = os.environ.get("MLFLOW_RUN_ID") or None
        if run_id:
            self.run_id = self.client.get_run(run_id).info.run_id  # fails early if unknown
            self.owns_run = False
        else:
            exp = self.client.get_experiment_by_name(experiment)
            if exp is not None:
                exp_id = exp.experiment_id
            elif tracking_uri.startswith("sqlite:///"):
                # Keep a local store's artifacts next to its db, not in the current directory.
                store = Path(tracking_uri[len("sqlite:///") :]).parent / "mlartifacts"
                exp_id = self.client.create_experiment(experiment, store.resolve().as_uri())
            else:
                exp_id = self.client.create_experiment(experiment)
            self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
            self.owns_run = True

    def log_params(self, params: dict[str, Any]) -> None:
        """Log params; a key a previous step already logged with another value keeps its first
        value (MLflow params are immutable) and the conflict is logged as a warning."""
        flat = flatten(params)
        logged = self.client.get_run(self.run_id).data.params
        changed = sorted(k for k, v in flat.items() if k in logged and logged[k] != v)
        if changed:
            log.warning(
                "MLflow run %s already has different values for %s; keeping the first values",
                self.run_id,
                ", ".join(changed),
            )
        items = [self._Param(k, v) for k, v in flat.items() if k not in logged]
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        items = [
            self._Metric(k, v, now, step or 0)
            for k, v in _floats(metrics).items()
            if not math.isinf(v)  # MLflow stores NaN but rejects inf
        ]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_history(self, rows: Iterable[tuple[int, dict[str, Any]]]) -> None:
        now = int(time.time() * 1000)
        items = [
            self._Metric(k, v, now, step)
            for step, metrics in rows
            for k, v in _floats(metrics).items()
            if not math.isinf(v)
        ]
        for i in range(0, len(items), 1000):  # MLflow accepts at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    @contextlib.contextmanager
    def system_metrics(self) -> Iterator[None]:
        """MLflow's system metrics (`system/cpu_utilization_percentage`, `system/gpu_0_…`, …) on
        this run while the block runs; MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL sets the period
        (default 10 s) and MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false turns them off.

        This is the monitor `mlflow.start_run(log_system_metrics=True)` starts, attached to the
        run directly: the run is the pipeline's, and `mlflow.end_run` would end it with the step.
        """
        if os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "").lower() in ("false", "0"):
            yield
            return
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(
                self.run_id, resume_logging=True, tracking_uri=self.tracking_uri
            )
        except Exception as e:  # psutil missing, or no access to the devices
            log.warning("no MLflow system metrics (they need psutil): %s", e)
            yield
            return
        monitor.start()
        try:
            yield
        finally:
            monitor.finish()

    def log_model(
        self,
        model_dir: str | Path,
        name: str,
        *,
        params: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        skip: Iterable[str] = (),
    ) -> str | None:
        """Log `model_dir` as an MLflow 3 LoggedModel of this run (its output), READY when done.

        Args:
            model_dir: the files to attach as the model's artifacts.
            name: the logged model's name (the registered model's name reads best).
            params: model parameters (flattened like run params).
            tags: lineage tags.
            metrics: values linked to the model and the run (the model page lists them).
            skip: file names under `model_dir` not to upload (e.g. weights kept elsewhere).

        Returns:
            The model id: register it with `ModelRegistry.register(..., model_id=…)`.
        """
        from mlflow.entities import LoggedModelOutput

        run = self.client.get_run(self.run_id)
        model = self.client.create_logged_model(
            run.info.experiment_id,
            name=name,
            source_run_id=self.run_id,
            tags={k: redact(str(v)) for k, v in (tags or {}).items()},
            params=flatten(params or {}),
            model_type="kiln-llama",
        )
        try:
            self._upload_model_files(model.model_id, Path(model_dir), set(skip))
            now = int(time.time() * 1000)
            items = [
                self._Metric(k, v, now, 0, model_id=model.model_id)
                for k, v in _floats(metrics or {}).items()
                if not math.isinf(v)
            ]
            if items:
                self.client.log_batch(self.run_id, metrics=items)
            self.client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, 0)])
        except Exception:
            self.client.finalize_logged_model(model.model_id, "FAILED")
            raise
        self.client.finalize_logged_model(model.model_id, "READY")
        return model.model_id

    def _upload_model_files(self, model_id: str, model_dir: Path, skip: set[str]) -> None:
        if not skip:
            self.client.log_model_artifacts(model_id, str(model_dir))
            return
        import tempfile

        with tempfile.TemporaryDirectory(prefix="kiln-model-") as tmp:  # the kept (small) files
            for path in model_dir.rglob("*"):
                rel = path.relative_to(model_dir)
                if path.is_file() and rel.as_posix() not in skip:
                    (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, Path(tmp) / rel)
            self.client.log_model_artifacts(model_id, tmp)

    def set_tags(self, tags: dict[str, Any]) -> None:
        items = [self._RunTag(k, redact(str(v))) for k, v in tags.items()]
        if items:
            self.client.log_batch(self.run_id, tags=items)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if Path(path).is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        if self.owns_run:
            self.client.set_terminated(self.run_id, status)


def make_tracker(
    cfg: Any,
    rank: int = 0,
    workdir: str | Path = "kiln-work",
    run_name: str | None = None,
    run_id: str | None = None,
) -> Tracker:
    """The tracker `cfg.tracking` asks for; a NullTracker on every rank but 0.

    Args:
        cfg: a `Config` (uses `cfg.tracking.backend`, `.uri`, `.experiment`).
        rank: the process's global rank; only rank 0 logs, so metrics aren't duplicated.
        workdir: where the file tracker and the default local MLflow store live.
        run_name: name for a new MLflow run (ignored when joining a run).
        run_id: MLflow run to join (e.g. passed between pipeline steps); default $MLFLOW_RUN_ID.
    """
    backend = cfg.tracking.backend
    if rank != 0 or backend == "none":
        return NullTracker()
    if backend == "file":
        return FileTracker(Path(workdir) / "tracking")
    if backend == "mlflow":
        uri = resolve_tracking_uri(cfg.tracking.uri, workdir)
        return MlflowTracker(uri, cfg.tracking.experiment, run_id=run_id, run_name=run_name)
    raise ValueError(f"tracking.backend must be mlflow, file or none, got {backend!r}")


def start_pipeline_run(
    cfg: Any,
    workdir: str | Path = "kiln-work",
    run_name: str | None = None,
    tags: dict[str, Any] | None = None,
) -> str:
    """Create the one MLflow run that every step of a pipeline run writes to.

    Returns its id ('' when `tracking.backend` is not mlflow): pass it to the steps
    (`make_tracker(cfg, run_id=…)` or $MLFLOW_RUN_ID) and end it with `end_pipeline_run`.
    """
    if cfg.tracking.backend != "mlflow":
        return ""
    uri = resolve_tracking_uri(cfg.tracking.uri, workdir)
    tracker = MlflowTracker(uri, cfg.tracking.experiment, run_name=run_name, join_env=False)
    tracker.set_tags(tags or {})
    return tracker.run_id or ""


def _pipeline_client(cfg: Any, workdir: str | Path) -> Any:
    """The MlflowClient of `cfg.tracking`, or None when tracking is not MLflow."""
    if cfg.tracking.backend != "mlflow":
        return None
    return mlflow_client(resolve_tracking_uri(cfg.tracking.uri, workdir))


def end_pipeline_run(
    cfg: Any, run_id: str, status: str = "FINISHED", workdir: str | Path = "kiln-work"
) -> None:
    """Mark the pipeline's MLflow run FINISHED / FAILED / KILLED (no-op without a run id)."""
    client = _pipeline_client(cfg, workdir) if run_id else None
    if client is not None:
        client.set_terminated(run_id, status)


def find_pipeline_run(cfg: Any, pipeline_run_id: str, workdir: str | Path = "kiln-work") -> str:
    """The id of the MLflow run tagged with KFP run `pipeline_run_id` ('' if none or not MLflow)."""
    client = _pipeline_client(cfg, workdir) if pipeline_run_id else None
    if client is None:
        return ""
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    if experiment is None:
        return ""
    quoted = pipeline_run_id.replace("'", "\\'")
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.pipeline_run_id = '{quoted}'", max_results=2
    )
    if len(runs) > 1:
        raise RuntimeError(f"more than one MLflow run is tagged pipeline_run_id={pipeline_run_id}")
    return runs[0].info.run_id if runs else ""


def close_pipeline_run(
    cfg: Any, run_id: str, status: str, error: str = "", workdir: str | Path = "kiln-work"
) -> str:
    """End a run still RUNNING with `status` (recording `error` as a tag); returns its final status.

    A run a step already ended (publish marks it FINISHED) keeps its status.
    """
    client = _pipeline_client(cfg, workdir) if run_id else None
    if client is None:
        return ""
    current = client.get_run(run_id).info.status
    if current != "RUNNING":
        return current
    if error:
        client.set_tag(run_id, "pipeline_error", redact(error)[:5000])
    client.set_terminated(run_id, status)
    return status
