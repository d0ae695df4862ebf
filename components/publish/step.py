"""The publish step of the pipeline: upload, register, and close the pipeline's MLflow run.

    result = publish_step("out/train/model", "out/eval", "out/publish", config_json, run_id,
                          tokens_dir="out/tokens", train_dir="out/train", pipeline_run_id="…")

Files go to `<artifact root>/runs/<MLflow run id>/` (artifact root: `storage.root`, else
s3://$AWS_S3_BUCKET/kiln, else the local stand-in), so re-running the step for the same run
writes the same objects and the registry returns the same version (idempotent).
`output_dir/publish.json` records what was published.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kiln.components.common import storage
from kiln.components.common.pipeline_run import step_config, workdir
from kiln.components.common.tracking import end_pipeline_run
from kiln.components.publish import publish


def output_uri_for(cfg: Any, run_key: str) -> str:
    """Where a run's published files go: `<artifact root>/runs/<run_key>`."""
    return storage.join(storage.artifact_root(cfg.storage, workdir()), "runs", run_key)


def publish_step(
    model_dir: str,
    eval_dir: str,
    output_dir: str,
    config_json: str,
    run_id: str = "",
    *,
    tokens_dir: str = "",
    train_dir: str = "",
    pipeline_run_id: str = "",
    pipeline_run_name: str = "",
    end_run: bool = True,
) -> dict[str, Any]:
    """Publish the model with its eval report, register a version, end the MLflow run.

    Args:
        model_dir: the Hugging Face model directory.
        eval_dir: the evaluate step's output (eval.json) or the eval.json itself.
        output_dir: where publish.json (the result) is written.
        config_json: the resolved config (`prepare_run`).
        run_id: the pipeline's MLflow run ('' = not tracked).
        tokens_dir, train_dir: lineage sources (manifest digests, checkpoints index).
        pipeline_run_id: the KFP run id, recorded with the version.
        pipeline_run_name: the KFP run name (Kubeflow Model Registry provenance).
        end_run: mark the MLflow run FINISHED afterwards (the run's last step).

    Returns:
        What `kiln.components.publish.publish` returns (URIs, sha256s, registered version).
    """
    cfg = step_config(config_json)
    eval_json = Path(eval_dir)
    if eval_json.is_dir():
        eval_json = eval_json / "eval.json"
    key = run_id or pipeline_run_id or Path(model_dir).resolve().parent.name
    result = publish(
        model_dir,
        str(eval_json),
        output_uri_for(cfg, key),
        cfg,
        tokens_dir=tokens_dir or None,
        train_dir=train_dir or None,
        run_id=run_id or None,
        pipeline_run_id=pipeline_run_id,
        pipeline_run_name=pipeline_run_name,
        workdir=workdir(),
    )
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "publish.json").write_text(json.dumps(result, indent=2, sort_keys=True, default=str))
    if end_run:
        end_pipeline_run(cfg, run_id, "FINISHED", workdir())
    return result
