"""`evaluate`: score a trained model on the held-out split, sample from it, judge it.

    from kiln.components.evaluate import evaluate
    report = evaluate("out/model", "data/tokens", "out/eval", cfg.eval, baseline_model_dir=None)
    report["val_loss"], report["bits_per_byte"], report["gate"]["passed"]

Writes `output_dir/eval.json` (and returns the same mapping):

    {"kiln_eval": 1, "model_dir": ..., "tokens_dir": ...,
     "val_loss": 3.21, "perplexity": 24.8, "bits_per_byte": 1.32, "val_tokens": ..., "val_bytes": ...,
     "metrics": {numeric metrics only, for KFP Metrics / MLflow},
     "val_set_digest": sha256 over the val shards' sha256s (the registry compares only equal ones),
     "dataset_digest": ..., "tokenizer_sha256": ...,          (lineage, from the tokens manifest)
     "samples": [{"prompt", "completion", "text"}],
     "baseline": {"model_dir", "val_loss", ...} | null, "gate": {"passed", "reasons", "failed"},
     "config": {the eval section}}

The metric definitions (bits per byte included) are in `metrics.py`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from kiln.components.common.config import EvalConfig
from kiln.components.common.model_ref import fetch_model
from kiln.components.evaluate.gate import gate_verdict
from kiln.components.evaluate.metrics import HeldOut, held_out_metrics, token_byte_lengths
from kiln.components.evaluate.samples import generate_samples
from kiln.components.tokenization.manifest import read_manifest, verify_shards
from kiln.components.tokenization.shards import sha256_file

log = logging.getLogger(__name__)
EVAL_JSON = "eval.json"


def val_set_digest(entries: list[Any]) -> str:
    """sha256 over the val shards' sha256s, in manifest order: the identity of the val set."""
    return hashlib.sha256("\n".join(e.sha256 for e in entries).encode()).hexdigest()


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in {"cpu", "cuda"}:
        raise ValueError(f"eval.device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def _local_model(ref: str, tmp: str, tracking_uri: str, workdir: str) -> Path:
    """A local model directory for `ref`: a path, or s3://… / models:/NAME@ALIAS (downloaded and
    verified against the upload's sha256 manifest)."""
    return fetch_model(ref, tmp, tracking_uri, workdir).directory


def _check_tokenizer(model_dir: Path, tokens_dir: Path, expected_sha: str) -> Path:
    """The tokens' tokenizer.json, checked against the manifest and the model's own copy."""
    tok_file = tokens_dir / "tokenizer.json"
    if not tok_file.exists():
        raise FileNotFoundError(f"{tok_file} not found: the tokens directory needs its tokenizer")
    sha = sha256_file(tok_file)
    if expected_sha and sha != expected_sha:
        raise ValueError(f"{tok_file}: sha256 {sha} differs from the manifest's {expected_sha}")
    model_tok = model_dir / "tokenizer.json"
    if model_tok.exists() and sha256_file(model_tok) != sha:
        raise ValueError(
            f"{model_tok} differs from {tok_file}: the model was trained with another tokenizer, "
            "so its loss on these tokens means nothing (evaluate on tokens made with its tokenizer)"
        )
    return tok_file


def _score(model_dir: Path, tokens_dir: Path, files: list[Path], cfg: EvalConfig, device):
    """(model, HeldOut) for the HF model in `model_dir` on the val shards `files`."""
    from kiln.components.pretrain.export import import_hf

    model = import_hf(model_dir).to(device)
    manifest_vocab = read_manifest(tokens_dir).vocab_size
    if model.cfg.vocab_size < manifest_vocab:
        raise ValueError(
            f"{model_dir}: model vocab_size {model.cfg.vocab_size} is smaller than the tokens' "
            f"vocab_size {manifest_vocab} ({tokens_dir}/manifest.json)"
        )
    seq_len = cfg.seq_len or model.cfg.max_seq_len
    if seq_len > model.cfg.max_seq_len:
        raise ValueError(
            f"eval.seq_len={seq_len} exceeds the model's max_position_embeddings "
            f"{model.cfg.max_seq_len} ({model_dir}/config.json)"
        )
    lengths = token_byte_lengths(tokens_dir / "tokenizer.json", model.cfg.vocab_size)
    held = held_out_metrics(model, files, lengths, seq_len, cfg.batch_size, cfg.max_tokens, device)
    return model, held


def evaluate(
    model_dir: str,
    tokens_dir: str,
    output_dir: str,
    cfg: EvalConfig,
    baseline_model_dir: str | None = None,
    *,
    tracking_uri: str = "",
    workdir: str = "kiln-work",
) -> dict[str, Any]:
    """Evaluate a Hugging Face format model on the `val` shards of a tokenized dataset.

    Args:
        model_dir: the trained model (`config.json`, `model.safetensors`, `tokenizer.json`).
        tokens_dir: tokenized dataset (`manifest.json`, `tokenizer.json`, `val/` shards).
        output_dir: where `eval.json` is written (created if needed).
        cfg: the `eval` config section: windows, samples, gate thresholds.
        baseline_model_dir: a model to compare with on the same tokens: a directory, an
            s3:// model prefix or `models:/NAME@ALIAS` (downloaded and verified).
        tracking_uri: MLflow for resolving `models:/` (default: $MLFLOW_TRACKING_URI / local).
        workdir: where the default local MLflow store lives.

    Returns:
        The report also written to `output_dir/eval.json` (see the module docstring).

    Raises:
        FileNotFoundError: a missing model, manifest, shard or tokenizer file.
        ValueError: no val shards, a val shard whose sha256 does not match the manifest, a
            tokenizer or vocabulary that does not match the model.
    """
    t0 = time.perf_counter()
    tokens = Path(tokens_dir)
    manifest = read_manifest(tokens)
    val = manifest.splits.get("val") or []
    if not val:
        raise ValueError(f"{tokens}/manifest.json lists no 'val' shards: nothing held out")
    files = [tokens / e.file for e in val]
    verify_shards(files)  # size, sha256, ids < vocabulary: the digest must describe these bytes
    device = _device(cfg.device)
    with tempfile.TemporaryDirectory(prefix="kiln-eval-") as tmp:
        model_path = _local_model(model_dir, tmp, tracking_uri, workdir)
        tok_file = _check_tokenizer(model_path, tokens, manifest.tokenizer_sha256)
        model, held = _score(model_path, tokens, files, cfg, device)
        from tokenizers import Tokenizer

        samples = generate_samples(model, Tokenizer.from_file(str(tok_file)), cfg, device)
        del model
        baseline: dict[str, Any] | None = None
        if baseline_model_dir:
            base_path = _local_model(baseline_model_dir, tmp, tracking_uri, workdir)
            _check_tokenizer(base_path, tokens, manifest.tokenizer_sha256)
            _, base_held = _score(base_path, tokens, files, cfg, device)
            baseline = {"model_dir": str(baseline_model_dir), **base_held.to_dict()}
    report = _report(model_dir, tokens, manifest, val, held, samples, baseline, cfg)
    report["seconds"] = round(time.perf_counter() - t0, 3)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp_json = out / f".{EVAL_JSON}.tmp-{os.getpid()}"
    tmp_json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    os.replace(tmp_json, out / EVAL_JSON)
    verdict = "passed" if report["gate"]["passed"] else "FAILED"
    log.info(
        "eval: val_loss %.4f ppl %.2f bpb %.4f on %d tokens; gate %s",
        held.val_loss,
        held.perplexity,
        held.bits_per_byte,
        held.tokens,
        verdict,
    )
    return report


def _report(model_dir, tokens, manifest, val, held: HeldOut, samples, baseline, cfg) -> dict:
    metrics: dict[str, float] = dict(held.to_dict())
    if baseline is not None:
        metrics["baseline_val_loss"] = baseline["val_loss"]
        metrics["baseline_bits_per_byte"] = baseline["bits_per_byte"]
        metrics["val_loss_improvement"] = baseline["val_loss"] - held.val_loss
    return {
        "kiln_eval": 1,
        "model_dir": str(model_dir),
        "tokens_dir": str(tokens),
        **held.to_dict(),
        "metrics": metrics,
        "val_set_digest": val_set_digest(val),
        "dataset_digest": manifest.dataset_digest,
        "tokenizer_sha256": manifest.tokenizer_sha256 or sha256_file(tokens / "tokenizer.json"),
        "samples": samples,
        "baseline": baseline,
        "gate": gate_verdict(held.to_dict(), cfg, baseline),
        "config": dataclasses.asdict(cfg),
    }


def read_eval(path: str | Path) -> dict[str, Any]:
    """Load an `eval.json` written by `evaluate`, checking the fields publish relies on."""
    path = Path(path)
    if path.is_dir():
        path = path / EVAL_JSON
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `kiln evaluate` first")
    data = json.loads(path.read_text())
    missing = [k for k in ("val_loss", "perplexity", "bits_per_byte", "gate") if k not in data]
    if data.get("kiln_eval") != 1 or missing:
        raise ValueError(
            f"{path}: not a Kiln eval report (expected kiln_eval=1 and fields val_loss, "
            f"perplexity, bits_per_byte, gate; missing {missing})"
        )
    return data
