"""The model registry (MLflow): register published models, gate `champion`, resolve versions.

    reg = ModelRegistry("http://127.0.0.1:5000")
    v = reg.register("kiln-llama", "s3://kiln/models/run-7", training_run_id="run-7",
                     metrics={"val_loss": 2.31}, tags={"dataset_digest": "…"})   # alias candidate
    gate = reg.promote_if_better("kiln-llama", v.version)                        # moves champion?
    reg.resolve("models:/kiln-llama@champion")                                   # → the S3 URI

Registration is idempotent by training run id: a re-run of publish for the same training run
returns the existing version instead of creating a duplicate. Evaluation metrics are stored on
the version as `metric.<name>` tags so the gate compares versions, not runs; `val_set_digest`
says which held-out set they were measured on, and only equal digests are compared.
MLflow itself is reached through `tracking.mlflow_client` (only tracking.py imports mlflow).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from kiln.components.common.tracking import (
    check_store,
    is_not_found,
    mlflow_client,
    resolve_tracking_uri,
)

CANDIDATE, CHAMPION = "candidate", "champion"
RUN_ID_TAG, VAL_SET_TAG, METRIC_PREFIX = "training_run_id", "val_set_digest", "metric."
MODEL_ID_TAG = "model_id"  # the MLflow 3 LoggedModel of the version's files
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


@dataclass
class Registered:
    """A registered version, and whether this call created it (False: it already existed)."""

    name: str
    version: str
    source: str
    created: bool


@dataclass
class GateResult:
    """The champion gate's verdict for one candidate version."""

    passed: bool
    reason: str
    metric: str
    candidate_value: float | None
    champion_value: float | None
    champion_version: str | None


class ModelRegistry:
    """Registered models and versions in MLflow at `tracking_uri` (default: env / local store)."""

    def __init__(self, tracking_uri: str = "", workdir: str = "kiln-work") -> None:
        self.tracking_uri = resolve_tracking_uri(tracking_uri, workdir)
        self.client = mlflow_client(self.tracking_uri)

    @classmethod
    def existing(cls, tracking_uri: str = "", workdir: str = "kiln-work") -> ModelRegistry:
        """The registry at an existing store, for readers: never creates a local store, and
        fails in seconds on a server that does not answer (see `tracking.check_store`)."""
        check_store(resolve_tracking_uri(tracking_uri, workdir))
        return cls(tracking_uri, workdir)

    # ---------------------------------------------------------------------------- registration
    def register(
        self,
        name: str,
        source: str,
        *,
        training_run_id: str,
        mlflow_run_id: str | None = None,
        description: str = "",
        tags: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        model_id: str | None = None,
    ) -> Registered:
        """Register `source` (the published model's URI) as a version of `name`, alias `candidate`.

        Args:
            name: registered model name.
            source: where the model's files are (s3://… or a local path), committed by storage.
            training_run_id: identifies the training run; a second call with the same id returns
                the existing version (created=False) instead of registering a duplicate.
            mlflow_run_id: the pipeline's MLflow run, linked from the version.
            description: free text shown in the registry.
            tags: lineage tags (dataset/tokenizer digest, code version, pipeline run id, URIs...).
            metrics: evaluation metrics, stored as `metric.<name>` tags for the gate.
            model_id: the MLflow 3 LoggedModel of these files (`Tracker.log_model`): the version
                carries its id (tag `model_id`; MLflow's open-source registry keeps no other
                field for it) and the model lists the version (`mlflow.modelVersions`).
        """
        if _is_local(source) and self.tracking_uri.startswith(("http://", "https://")):
            raise ValueError(
                f"MLflow server {self.tracking_uri} accepts no local model source ({source!r}); "
                "publish to S3 (AWS_S3_ENDPOINT + AWS_S3_BUCKET, or storage.root=s3://…) "
                "when tracking to a server"
            )
        existing = self.find_by_training_run(name, training_run_id)
        if existing is not None:
            self.set_alias(name, existing.version, CANDIDATE)
            return Registered(name, existing.version, existing.source, created=False)
        try:
            self.client.get_registered_model(name)
        except Exception as e:
            if not is_not_found(e):
                raise
            self.client.create_registered_model(name, description="Kiln pretrained models")
        all_tags = {str(k): str(v) for k, v in (tags or {}).items()}
        all_tags[RUN_ID_TAG] = training_run_id
        if model_id:
            all_tags[MODEL_ID_TAG] = model_id
        all_tags.update({f"{METRIC_PREFIX}{k}": repr(float(v)) for k, v in (metrics or {}).items()})
        mv = self.client.create_model_version(
            name,
            source,
            run_id=mlflow_run_id,
            tags=all_tags,
            description=description,
            model_id=model_id,
        )
        if model_id:
            self._list_version_on_model(model_id, name, str(mv.version))
        self.set_alias(name, mv.version, CANDIDATE)
        return Registered(name, str(mv.version), mv.source, created=True)

    def _list_version_on_model(self, model_id: str, name: str, version: str) -> None:
        """Record the version on its LoggedModel (`mlflow.modelVersions`, as `mlflow.register_model`
        does; a tracking server adds it itself, so only a missing entry is added)."""
        key = "mlflow.modelVersions"
        listed = json.loads(self.client.get_logged_model(model_id).tags.get(key) or "[]")
        if not any(v.get("name") == name and str(v.get("version")) == version for v in listed):
            entry = {"name": name, "version": int(version)}  # as the server writes it
            self.client.set_logged_model_tags(model_id, {key: json.dumps([*listed, entry])})

    def set_version_tags(self, name: str, version: str | int, tags: dict[str, Any]) -> None:
        """Set (or overwrite) tags on one version, e.g. its ids in another registry."""
        for key, value in tags.items():
            self.client.set_model_version_tag(name, str(version), key, str(value))

    def find_by_training_run(self, name: str, training_run_id: str) -> Any | None:
        """The version of `name` registered for `training_run_id`, if any."""
        for mv in self._versions(name):
            if mv.tags.get(RUN_ID_TAG) == training_run_id:
                return mv
        return None

    def _versions(self, name: str) -> list[Any]:
        safe = name.replace("'", "\\'")
        return list(self.client.search_model_versions(f"name='{safe}'"))

    # ----------------------------------------------------------------------- aliases and gate
    def set_alias(self, name: str, version: str | int, alias: str) -> None:
        """Point `alias` at `version` (moving it from any other version)."""
        self.client.set_registered_model_alias(name, alias, str(version))

    def version_by_alias(self, name: str, alias: str) -> Any | None:
        """The version `alias` points at, or None when the alias is not set."""
        try:
            return self.client.get_model_version_by_alias(name, alias)
        except Exception as e:
            if is_not_found(e):
                return None
            raise

    def gate(self, name: str, version: str | int, metric: str = "val_loss") -> GateResult:
        """May `version` become champion? Yes if there is none, or if its `metric` (lower is
        better) beats the champion's measured on the same validation set."""
        mv = self.client.get_model_version(name, str(version))
        value = _metric(mv, metric)
        champ = self.version_by_alias(name, CHAMPION)

        def verdict(passed: bool, reason: str) -> GateResult:
            champ_value = _metric(champ, metric) if champ else None
            champ_version = str(champ.version) if champ else None
            return GateResult(passed, reason, metric, value, champ_value, champ_version)

        if value is None:
            return verdict(False, f"version {version} has no {METRIC_PREFIX}{metric} tag")
        if champ is None:
            return verdict(True, "no champion yet")
        if str(champ.version) == str(version):
            return verdict(True, f"version {version} already is the champion")
        champ_value = _metric(champ, metric)
        if champ_value is None:
            return verdict(True, f"champion v{champ.version} has no {metric}; replacing it")
        if champ.tags.get(VAL_SET_TAG) != mv.tags.get(VAL_SET_TAG):
            return verdict(
                False,
                f"{metric} not comparable: validation set {mv.tags.get(VAL_SET_TAG)!r} differs "
                f"from champion v{champ.version}'s {champ.tags.get(VAL_SET_TAG)!r}",
            )
        if value < champ_value:
            return verdict(
                True, f"{metric} {value:.4f} < champion v{champ.version}'s {champ_value:.4f}"
            )
        return verdict(
            False,
            f"{metric} {value:.4f} does not beat champion v{champ.version}'s {champ_value:.4f}",
        )

    def promote_if_better(
        self, name: str, version: str | int, metric: str = "val_loss"
    ) -> GateResult:
        """Run the gate and move `champion` to `version` only when it passes."""
        result = self.gate(name, version, metric)
        if result.passed:
            self.set_alias(name, version, CHAMPION)
        return result

    # ----------------------------------------------------------------------------- read side
    def list_models(self) -> list[dict[str, Any]]:
        """Every registered model: name, number of versions, latest version, aliases."""
        out = []
        for rm in self.client.search_registered_models():
            versions = self._versions(rm.name)
            latest = max((int(v.version) for v in versions), default=None)
            out.append(
                {
                    "name": rm.name,
                    "versions": len(versions),
                    "latest": latest,
                    "aliases": {a: str(v) for a, v in (rm.aliases or {}).items()},
                }
            )
        return sorted(out, key=lambda m: m["name"])

    def show(
        self, name: str, version: str | int | None = None, alias: str | None = None
    ) -> dict[str, Any]:
        """One version (by number, by alias, else the latest): source, aliases, lineage tags,
        evaluation metrics and the metrics of its MLflow run."""
        if alias:
            mv = self.version_by_alias(name, alias)
            if mv is None:
                raise ValueError(f"model {name!r} has no alias {alias!r}")
        elif version is not None:
            try:
                mv = self.client.get_model_version(name, str(version))
            except Exception as e:
                if is_not_found(e):
                    raise ValueError(f"model {name!r} has no version {version}") from None
                raise
        else:
            versions = self._versions(name)
            if not versions:
                raise ValueError(f"no registered model named {name!r} (see `kiln models list`)")
            mv = max(versions, key=lambda v: int(v.version))
        tags = dict(mv.tags)
        metrics = {
            k[len(METRIC_PREFIX) :]: float(v)
            for k, v in tags.items()
            if k.startswith(METRIC_PREFIX)
        }
        run_metrics: dict[str, float] = {}
        if mv.run_id:
            try:
                run_metrics = dict(self.client.get_run(mv.run_id).data.metrics)
            except Exception as e:
                if not is_not_found(e):
                    raise
        rm = self.client.get_registered_model(name)
        return {
            "name": name,
            "version": str(mv.version),
            "aliases": sorted(
                a for a, v in (rm.aliases or {}).items() if str(v) == str(mv.version)
            ),
            "source": mv.source,
            "description": mv.description or "",
            "mlflow_run_id": mv.run_id or "",
            "model_id": tags.get(MODEL_ID_TAG, ""),
            "metrics": metrics,
            "run_metrics": run_metrics,
            "tags": {k: v for k, v in tags.items() if not k.startswith(METRIC_PREFIX)},
        }

    def show_uri(self, uri: str) -> dict[str, Any]:
        """`show` of the version `models:/NAME@ALIAS` or `models:/NAME/VERSION` names."""
        m = _MODELS_URI.match(uri)
        if not m:
            raise ValueError(f"{uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
        return self.show(m["name"], version=m["version"], alias=m["alias"])

    def resolve(self, uri: str) -> str:
        """`models:/NAME@ALIAS` or `models:/NAME/VERSION` → the version's source URI."""
        return self.show_uri(uri)["source"]


def _is_local(source: str) -> bool:
    """A filesystem path or file:// URI (an MLflow server refuses these as version sources)."""
    return source.startswith("file:") or not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]+:", source)


def _metric(mv: Any, metric: str) -> float | None:
    raw = mv.tags.get(f"{METRIC_PREFIX}{metric}") if mv is not None else None
    return float(raw) if raw is not None else None
