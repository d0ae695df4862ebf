"""`kiln run` as the README runs it: built-in corpus, local Ray, local MLflow store, local S3
stand-in, nothing configured. Slower than the unit tests (one short pipeline run, ~1 min)."""

import json

import pytest

from kiln.pipelines.cli import main

pytestmark = pytest.mark.ray


@pytest.fixture
def bare_env(monkeypatch):
    """No S3 endpoint, no MLflow server, no Ray cluster: the embedded defaults."""
    for key in (
        "AWS_S3_ENDPOINT", "AWS_S3_BUCKET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
        "KILN_S3_LOCAL_ROOT", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "RAY_ADDRESS", "KILN_WORKDIR",
    ):  # fmt: skip
        monkeypatch.delenv(key, raising=False)


def test_kiln_run_on_embedded_defaults(bare_env, tmp_path, capsys, monkeypatch):
    work = tmp_path / "w"
    argv = ["run", "--workdir", str(work), "--workers", "1", "--model-name", "local-e2e",
            "--set", "train.max_steps=6", "--set", "train.eval_every=0",
            "--set", "tokenizer.vocab_size=1024", "--set", "eval.max_tokens=2048"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    summary = out[out.index("kiln run finished") :]
    for label in ("model (Hugging Face)", "MLflow", "registered", "published", "eval", "sample"):
        assert label in summary, label
    # 6 steps do not beat the unigram baseline: a candidate, and the line says which rule decided
    assert (
        "local-e2e version 1 (aliases: candidate): candidate only, not champion, by the "
        "first-champion rule" in summary
    )
    assert f"sqlite:///{work.resolve()}/mlflow.db" in summary
    assert "--preset mini trains a model that learns the text" in summary  # tiny by default
    corpus = work / "corpus" / "python-docs.jsonl"
    assert corpus.exists() and corpus.stat().st_size > 400_000  # the built-in corpus
    run_dir = max((work / "kfp").glob("kiln-pretrain-*"))
    published = json.loads((run_dir / "publish" / "published" / "publish.json").read_text())
    assert published["model_uri"].startswith("s3://kiln/")
    # the S3 stand-in holds the committed model under WORKDIR/s3/<bucket>/<key>
    key = published["model_uri"].removeprefix("s3://")
    assert (work / "s3" / key / "_KILN_MANIFEST.json").exists()
    assert (run_dir / "pretrain" / "trained" / "ray").is_dir()  # trained by Ray Train
    # with the environment it prints, the registry commands read the run back
    monkeypatch.setenv("KILN_S3_LOCAL_ROOT", str(work / "s3"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work.resolve()}/mlflow.db")
    assert main(["artifacts", "get", "models:/local-e2e@candidate", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "model.safetensors").exists()
