"""Config sections around the model: storage, tracking and registry, evaluation, publishing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from kiln.components.common.config.fields import Section, fail, setting

# Kubernetes object names (RFC 1123 label) and resource quantities ("4", "500m", "16Gi").
K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
K8S_SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")  # RFC 1123 subdomain
K8S_QUANTITY = re.compile(r"\d+(\.\d+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?")


@dataclass
class StorageConfig(Section):
    """Where artifacts go. Credentials never live here: they come from the data-connection env
    (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), so they can't leak into logs or MLflow params."""

    KEY = "storage"

    root: str = setting(
        "",
        "Artifact root: s3://bucket/prefix, or a local dir; '' = s3://$AWS_S3_BUCKET/kiln when a "
        "bucket is set, else WORKDIR/s3.",
    )
    endpoint: str = setting(
        "", "S3 endpoint URL; '' = $AWS_S3_ENDPOINT (unset: the local stand-in)."
    )
    region: str = setting("", "S3 region; '' = $AWS_DEFAULT_REGION, else us-east-1.")
    part_size_mb: int = setting(
        64, "Multipart part size in MiB (min 5, S3's); also the multipart threshold.", ge=5
    )
    max_concurrency: int = setting(8, "Parallel part uploads/downloads per file.", ge=1)
    retries: int = setting(
        5, "Attempts per S3 operation on transient errors (connection, 5xx, throttling).", ge=1
    )
    retry_backoff_s: float = setting(
        0.5, "First retry delay in seconds; doubles per attempt, capped at 8 s.", ge=0
    )

    def check(self) -> None:
        if self.endpoint and not self.endpoint.startswith(("http://", "https://")):
            fail("storage.endpoint", "'' or an http(s):// URL", self.endpoint)
        if self.root.startswith("s3://") and not self.root.removeprefix("s3://").strip("/"):
            fail("storage.root", "s3://BUCKET[/prefix] with a bucket", self.root)


@dataclass
class TrackingConfig(Section):
    """Experiment tracking and the model registry."""

    KEY = "tracking"

    backend: Literal["mlflow", "file", "none"] = setting(
        "mlflow", "mlflow | file (JSONL under the workdir, no server) | none."
    )
    uri: str = setting(
        "", "MLflow tracking URI; '' = $MLFLOW_TRACKING_URI, else sqlite:///WORKDIR/mlflow.db."
    )
    experiment: str = setting("kiln", "MLflow experiment that pipeline runs are recorded under.")
    model_name: str = setting(
        "kiln-llama", "Registered model name: publish creates its versions, deploy serves them."
    )
    gate_metric: str = setting(
        "val_loss", "Metric (lower is better) that must beat the champion's to move `champion`."
    )

    def check(self) -> None:
        for name in ("experiment", "gate_metric"):
            if not getattr(self, name).strip():
                fail(self.key(name), "a non-empty name", getattr(self, name))
        if not self.model_name.strip() or any(c in self.model_name for c in "/:"):
            fail("tracking.model_name", "a registry name without '/' or ':'", self.model_name)


@dataclass
class EvalConfig(Section):
    """Evaluation of a trained model on the held-out split, and its gate (`kiln evaluate`)."""

    KEY = "eval"

    seq_len: int = setting(
        0, "Context per evaluation window in tokens; 0 = the model's max_seq_len.", ge=0
    )
    batch_size: int = setting(8, "Windows per forward pass.", ge=1)
    max_tokens: int = setting(
        1_000_000, "Score at most this many target tokens of the val split (0 = all of it).", ge=0
    )
    device: Literal["auto", "cpu", "cuda"] = setting(
        "auto", "auto (cuda when available, else cpu) | cpu | cuda."
    )
    prompts: list[str] = setting(
        ["The ", "Once upon a time", "In 1905,"], "Fixed prompts for generation samples."
    )
    sample_tokens: int = setting(48, "Tokens generated per prompt.", ge=0)
    temperature: float = setting(0.8, "Sampling temperature for samples (0 = greedy).", ge=0)
    top_k: int = setting(50, "Sample among the k most likely tokens (0 = off).", ge=0)
    seed: int = setting(1337, "Seed of the sampling generator, so samples are reproducible.", ge=0)
    max_val_loss: float = setting(
        0.0, "Gate: fail when val loss (nats/token) exceeds this (0 = off).", ge=0
    )
    max_bits_per_byte: float = setting(
        0.0, "Gate: fail when bits per byte exceed this (0 = off).", ge=0
    )
    baseline_margin: float = setting(
        0.0,
        "Gate, with a baseline: the val loss must be at least this much (nats) below the "
        "baseline's; negative tolerates a small regression.",
    )
    unigram_margin: float = setting(
        0.05,
        "Champion rule while there is no champion: the val loss must be at least this fraction "
        "below the unigram baseline of the model's own tokenizer (the entropy of the held-out "
        "tokens' frequencies, nats/token); 0.05 = 5% below.",
        ge=0,
        lt=1,
    )


@dataclass
class PublishConfig(Section):
    """Upload a trained model to S3, track it in MLflow, register a version of
    `tracking.model_name` (`kiln publish`), and also in a Kubeflow Model Registry when
    `model_registry_url` is set."""

    KEY = "publish"

    upload_checkpoints: Literal["none", "latest", "all"] = setting(
        "none",
        "Checkpoint files to upload besides their index: none | latest | all (weights + "
        "optimizer state: big).",
    )
    promote: bool = setting(
        True, "Move `champion` when the eval gate passed and the registry gate agrees."
    )
    description: str = setting(
        "", "Text for the registered version (default: a generated summary)."
    )
    serving_name: str = setting(
        "", "InferenceService name; '' = derived from the model name and version."
    )
    serving_namespace: str = setting("", "InferenceService namespace; '' = the current one.")
    serving_queue: str = setting(
        "kiln-queue",
        "Kueue LocalQueue of the InferenceService (label kueue.x-k8s.io/queue-name, which KServe "
        "copies to the predictor's Deployment and pods); '' = not queued.",
    )
    serving_gpus: int = setting(1, "GPUs per serving replica (vLLM).", ge=0)
    serving_cpu: str = setting("4", "CPU request/limit per serving replica.")
    serving_memory: str = setting("16Gi", "Memory request/limit per serving replica.")
    model_registry_url: str = setting(
        "",
        "Kubeflow (OpenShift AI) Model Registry REST URL, e.g. https://modelregistry-rest.apps."
        "example.com: publish registers each MLflow version there too; '' = off. Token: "
        "$MODEL_REGISTRY_TOKEN.",
    )
    model_registry_author: str = setting(
        "kiln", "Author of the versions (and owner of the models) publish creates there."
    )
    model_registry_storage_key: str = setting(
        "kiln-data-connection",
        "Data connection (Secret) recorded as the artifact's storage key: the one that serving "
        "reads the model's S3 URI with.",
    )

    def check(self) -> None:
        url = self.model_registry_url
        if url and not re.fullmatch(r"https?://[^/?#\s]+/?", url):
            fail("publish.model_registry_url", "'' or http(s)://HOST[:PORT] without a path", url)
        if url and not self.model_registry_author.strip():
            fail("publish.model_registry_author", "a non-empty name", self.model_registry_author)
        key = self.model_registry_storage_key
        if key and not K8S_SECRET_NAME.fullmatch(key):
            fail("publish.model_registry_storage_key", "'' or a Kubernetes Secret name", key)
        for name in ("serving_name", "serving_namespace", "serving_queue"):
            value = getattr(self, name)
            if value and not K8S_NAME.fullmatch(value):
                fail(self.key(name), "'' or a Kubernetes name (a-z, 0-9, '-', <= 63)", value)
        for name in ("serving_cpu", "serving_memory"):
            value = getattr(self, name)
            if not K8S_QUANTITY.fullmatch(value):
                fail(self.key(name), "a Kubernetes quantity such as 4, 500m or 16Gi", value)
