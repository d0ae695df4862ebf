"""Publish step 4: the KServe InferenceService manifest for a registered version."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import yaml

from kiln.components.common import storage
from kiln.components.common.config import Config
from kiln.components.common.storage import S3Settings
from kiln.components.common.tracking import Tracker
from kiln.components.publish.inference_service import STORAGE_SCHEMES, render_inference_service

ISVC_FILE = "inference_service.yaml"


def serving_name(model_name: str, version: str) -> str:
    """A DNS-1035 InferenceService name (≤ 45 characters) for a model version: `kiln-llama-v3`."""
    base = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-") or "kiln"
    if not base[0].isalpha():
        base = f"m-{base}"
    suffix = f"-v{version}"
    return base[: 45 - len(suffix)].rstrip("-") + suffix


def render_for_version(
    cfg: Config,
    model_name: str,
    version: str,
    alias: str,
    model_uri: str,
    output_uri: str,
    settings: S3Settings,
    tracker: Tracker,
    max_model_len: int | None = None,
) -> str | None:
    """Render the InferenceService for `model_uri`, upload it to
    `OUTPUT/serving/inference_service.yaml` and attach it to the run; returns its URI.

    None when the model is not on storage a cluster can read (a plain local directory).
    """
    if not model_uri.startswith(STORAGE_SCHEMES):
        return None
    pc = cfg.publish
    body = render_inference_service(
        pc.serving_name or serving_name(model_name, version),
        model_uri,
        namespace=pc.serving_namespace or None,
        gpus=pc.serving_gpus,
        cpu=pc.serving_cpu,
        memory=pc.serving_memory,
        max_model_len=max_model_len,
        queue_name=pc.serving_queue,
        model_name=model_name,
        model_version=str(version),
        alias=alias,
    )
    uri = storage.join(output_uri, "serving", ISVC_FILE)
    with tempfile.TemporaryDirectory(prefix="kiln-isvc-") as tmp:
        path = Path(tmp) / ISVC_FILE
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        storage.upload_file(path, uri, settings)
        tracker.log_artifact(path, "serving")
    return uri
