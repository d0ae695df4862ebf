"""`publish`: upload an evaluated model (verified), then track and register it, then render serving.

    from kiln.components.publish import publish
    out = publish("runs/r1/model", "runs/r1/eval/eval.json", "s3://kiln/models/r1", cfg,
                  tokens_dir="data/tokens", train_dir="runs/r1", run_id=mlflow_run_id)
    out["model_uri"], out["registered"]["version"], out["registered"]["aliases"]

Order matters, so a failure never leaves a half-published model that looks complete:

1. **Upload** (storage layer, sha256 per file, commit manifest written last):
   `OUTPUT/model/` the Hugging Face directory (+ tokenizer), `OUTPUT/report/` (eval.json,
   samples.json, checkpoints.json, config.json, lineage.json, loss_curve.png) and, when
   `publish.upload_checkpoints` says so, `OUTPUT/checkpoints/step_N/`. A prefix already committed
   with the same files and hashes is left as is. If S3 stays unreachable, publish stops here:
   nothing is logged to MLflow and nothing is registered.
2. **Track**: eval metrics, params (the resolved config), lineage tags and artifacts on the MLflow
   run (`run_id`, else $MLFLOW_RUN_ID, else a new run).
3. **Register** the model as an MLflow 3 LoggedModel of the run, and a version of
   `tracking.model_name` linked to it whose source is `OUTPUT/model`, alias `candidate`;
   `champion` moves only when the eval gate passed and then, with a champion, the version beats
   it on `tracking.gate_metric` on the same val set, or, with none yet, its val loss is
   `eval.unigram_margin` below the unigram baseline of its tokenizer (`track.decide_champion`).
   Idempotent: the version is keyed by the MLflow run id (or, without one, by the weights'
   sha256), so publishing the same run again returns the existing version.
   With `publish.model_registry_url`, the version is registered in the Kubeflow (OpenShift AI)
   Model Registry too, under the same name and version number (`kubeflow_publish`); if that
   registry is down, publish fails with one line, and a re-run completes the registration.
4. **Serve**: the KServe InferenceService for the version, uploaded to
   `OUTPUT/serving/inference_service.yaml` (not applied: deploying is `kiln deploy`'s job).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from kiln.components.common import storage
from kiln.components.common.config import Config
from kiln.components.common.errors import UserError
from kiln.components.common.storage import S3Settings, StorageError
from kiln.components.evaluate import read_eval
from kiln.components.publish import lineage
from kiln.components.publish.inference_service import STORAGE_SCHEMES
from kiln.components.publish.kubeflow_publish import register_in_kubeflow
from kiln.components.publish.serving import render_for_version
from kiln.components.publish.track import log_to_run, register_version, version_description

log = logging.getLogger(__name__)


def _check_model_dir(model_dir: Path) -> None:
    need = ["config.json", "tokenizer.json"]
    missing = [n for n in need if not (model_dir / n).is_file()]
    if not list(model_dir.glob("*.safetensors")):
        missing.append("*.safetensors")
    if missing:
        raise FileNotFoundError(
            f"{model_dir} is not a complete Hugging Face model directory (missing "
            f"{', '.join(missing)}); publish the `model/` directory that `kiln train` writes"
        )


def upload_committed(local: Path, uri: str, s: S3Settings) -> dict[str, Any]:
    """Upload a directory unless `uri` already holds a committed copy with the same files and
    sha256s (then nothing is rewritten, so a re-publish never un-commits a live model)."""
    current = storage.read_manifest(uri, s)
    if current is not None:
        want = {
            p.relative_to(local).as_posix(): storage.sha256_file(p)
            for p in local.rglob("*")
            if p.is_file()
        }
        have = {rel: meta["sha256"] for rel, meta in current.get("files", {}).items()}
        if want == have:
            log.info("%s already committed with identical files; not re-uploaded", uri)
            return current
    return storage.upload_dir(local, uri, s)


def _stage_report(
    tmp: Path, eval_json: Path, report: dict, cfg: Config, tags: dict, index: list, train_dir
) -> Path:
    out = tmp / "report"
    out.mkdir()
    shutil.copyfile(eval_json, out / "eval.json")
    (out / "samples.json").write_text(json.dumps(report.get("samples", []), indent=2) + "\n")
    (out / "checkpoints.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    (out / "config.json").write_text(cfg.to_json() + "\n")
    (out / "lineage.json").write_text(json.dumps(tags, indent=2, sort_keys=True) + "\n")
    if train_dir:
        from kiln.components.pretrain.runtime import TRAIN_LOG

        lineage.plot_loss_curve(Path(train_dir) / TRAIN_LOG, out / "loss_curve.png")
    return out


def _upload_all(model: Path, report_dir: Path, index: list, train_dir, output_uri, cfg, s):
    """Step 1. Returns {uri: sha256} of every uploaded file; StorageError when S3 stays down."""
    mode = cfg.publish.upload_checkpoints
    files: dict[str, str] = {}
    try:
        targets = [(model, storage.join(output_uri, "model"))]
        chosen = index if mode == "all" else index[-1:] if mode == "latest" else []
        root = Path(train_dir or ".")
        for entry in chosen:
            src = root / "checkpoints" / entry["name"]
            src = src if src.is_dir() else root / entry["name"]
            targets.append((src, storage.join(output_uri, "checkpoints", entry["name"])))
        targets.append((report_dir, storage.join(output_uri, "report")))  # last: the summary
        for local, uri in targets:
            manifest = upload_committed(local, uri, s)
            files.update({storage.join(uri, r): m["sha256"] for r, m in manifest["files"].items()})
    except Exception as e:
        raise StorageError(
            f"publish: uploading {model} to {output_uri} failed, so nothing was logged to MLflow "
            f"or registered (the unfinished prefix has no commit marker; re-run publish once "
            f"storage is reachable): {e}"
        ) from e
    return files


def publish(
    model_dir: str,
    eval_json: str,
    output_uri: str,
    cfg: Config,
    *,
    tokens_dir: str | None = None,
    train_dir: str | None = None,
    run_id: str | None = None,
    pipeline_run_id: str = "",
    pipeline_run_name: str = "",
    model_name: str | None = None,
    workdir: str = "kiln-work",
    settings: S3Settings | None = None,
) -> dict[str, Any]:
    """Publish an evaluated model: upload, track, register, render serving (see module doc).

    Args:
        model_dir: the Hugging Face model directory (config.json, *.safetensors, tokenizer.json).
        eval_json: the `eval.json` written by `evaluate` (or the directory holding it).
        output_uri: where to upload: s3://bucket/prefix, or a local directory standing in for S3.
        cfg: the resolved config (logged as params; `publish`, `tracking`, `storage` sections).
        tokens_dir: the tokenized dataset, for the dataset and tokenizer digests.
        train_dir: the training output dir, for the checkpoints index and the loss curve.
        run_id: the pipeline's MLflow run (default $MLFLOW_RUN_ID, else a new run).
        pipeline_run_id: the KFP pipeline run id, recorded as a lineage tag.
        pipeline_run_name: the KFP run's name, for the Kubeflow Model Registry's provenance.
        model_name: registered model name (default `tracking.model_name`).
        workdir: where the default local MLflow store lives.
        settings: S3 settings (default: from the environment and `cfg.storage`).

    Returns:
        {"model_uri", "output_uri", "report_uri", "files": {uri: sha256}, "training_run_id",
         "mlflow_run_id", "registered": {"name", "version", "aliases", "created", "model_id"}
         | None, "champion": {"moved", "rule", "reason"}, "inference_service": uri | None,
         "kubeflow": {"url", "registered_model_id", "model_version_id", "model_artifact_id",
         "created"} | None}

    Raises:
        FileNotFoundError: an incomplete model directory or a missing eval.json.
        ValueError: a local model source with an MLflow server (which cannot read it).
        StorageError: S3 unreachable beyond the retries (nothing logged or registered then).
        UserError: the Kubeflow Model Registry is down (`Unreachable`) or refuses the version,
            or the model is not on storage it can point at; re-run publish once it is fixed.
    """
    model = Path(model_dir)
    _check_model_dir(model)
    report = read_eval(eval_json)
    eval_path = Path(eval_json) / "eval.json" if Path(eval_json).is_dir() else Path(eval_json)
    name = model_name or cfg.tracking.model_name
    s = settings or storage.settings_from_config(cfg.storage)
    output_uri = str(output_uri).rstrip("/")
    model_uri, report_uri = storage.join(output_uri, "model"), storage.join(output_uri, "report")
    kubeflow_url = cfg.publish.model_registry_url
    if kubeflow_url and not model_uri.startswith(STORAGE_SCHEMES):
        raise UserError(
            f"publish.model_registry_url is set, but {model_uri} is a local path that a cluster "
            "cannot read: publish to S3 (AWS_S3_ENDPOINT + AWS_S3_BUCKET, or storage.root=s3://…)"
        )
    if kubeflow_url and cfg.tracking.backend != "mlflow":
        log.warning(
            "publish.model_registry_url is set but tracking.backend=%s: the Kubeflow version "
            "mirrors the MLflow one, so nothing is registered there",
            cfg.tracking.backend,
        )
    run_id = run_id or os.environ.get("MLFLOW_RUN_ID") or None
    weights_sha = storage.sha256_file(sorted(model.glob("*.safetensors"))[0])
    training_run_id = run_id or f"model-sha256:{weights_sha}"
    tags = lineage.lineage_tags(report, tokens_dir)
    tags.update(
        pipeline_run_id=pipeline_run_id,
        model_uri=model_uri,
        report_uri=report_uri,
        output_uri=output_uri,
        model_sha256=weights_sha,
        eval_gate="passed" if report["gate"]["passed"] else "failed",
    )
    index = lineage.checkpoints_index(train_dir)
    with tempfile.TemporaryDirectory(prefix="kiln-publish-") as tmp:
        report_dir = _stage_report(Path(tmp), eval_path, report, cfg, tags, index, train_dir)
        files = _upload_all(model, report_dir, index, train_dir, output_uri, cfg, s)
        tracked = log_to_run(cfg, report, tags, report_dir, run_id, training_run_id, name, workdir)
    result: dict[str, Any] = {
        "model_uri": model_uri,
        "output_uri": output_uri,
        "report_uri": report_uri,
        "files": files,
        "training_run_id": training_run_id,
        "mlflow_run_id": tracked.run_id or "",
        "registered": None,
        "champion": {
            "moved": False,
            "rule": "tracking",
            "reason": "tracking is off: nothing registered",
        },
        "inference_service": None,
        "kubeflow": None,
    }
    try:
        if cfg.tracking.backend == "mlflow":
            reg, champion = register_version(
                cfg, report, tags, name, training_run_id, tracked, workdir, model_dir=model
            )
            result["registered"], result["champion"] = reg, champion
            if kubeflow_url:
                result["kubeflow"] = register_in_kubeflow(
                    cfg,
                    name,
                    reg,
                    report,
                    tags,
                    mlflow_run_id=tracked.run_id or "",
                    config_sha256=files[storage.join(report_uri, "config.json")],
                    description=version_description(cfg, report, tags),
                    pipeline_run_name=pipeline_run_name,
                    workdir=workdir,
                )
            alias = "champion" if "champion" in reg["aliases"] else "candidate"
            hf = json.loads((model / "config.json").read_text())
            result["inference_service"] = render_for_version(
                cfg,
                name,
                reg["version"],
                alias,
                model_uri,
                output_uri,
                s,
                tracked,
                max_model_len=hf.get("max_position_embeddings"),
            )
    except Exception:
        tracked.finish("FAILED")
        raise
    tracked.finish("FINISHED")
    return result
