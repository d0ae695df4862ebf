"""A user's first hour: every mistake ends in one line `kiln COMMAND: error: …`, a non-zero exit
code and no traceback (unless `kiln -v`); dead servers fail in seconds; readers find what
`kiln run` left in ./kiln-work and create nothing when there is nothing to read.

`made_run` builds what `kiln run` leaves behind (a model committed to the local S3 stand-in
kiln-work/s3 and registered in kiln-work/mlflow.db) directly, in a few seconds; `bare_cwd` is a
fresh working directory with no S3, MLflow or Kubernetes configured.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kiln.components.common import storage
from kiln.components.common.registry import ModelRegistry
from kiln.pipelines.cli import main, user_error

MODEL_URI = "s3://kiln/kiln/models/run-1/model"
MODEL_NAME = "kiln-llama"
_ENV = (
    "AWS_S3_ENDPOINT", "AWS_S3_BUCKET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "KILN_S3_LOCAL_ROOT",
    "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "KILN_WORKDIR", "KFP_TOKEN",
)  # fmt: skip


def closed_url() -> str:
    """http://127.0.0.1:PORT where nothing listens (a port that was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def error_line(err: str, command: str) -> str:
    """The one error line that ends stderr; no traceback, no second error."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(f"kiln {command}: error: "), err
    assert sum(": error: " in line for line in lines) == 1, err
    return lines[-1]


@pytest.fixture
def bare_cwd(tmp_path, monkeypatch) -> Path:
    """An empty working directory; no S3, MLflow, KFP or kube config in the environment."""
    for key in _ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookups
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


@pytest.fixture(scope="module")
def made_run(tmp_path_factory) -> Path:
    """A kiln-work directory as `kiln run` leaves it: the model in the local S3 stand-in, and a
    registered version (eval gate passed) in the local MLflow store."""
    root = tmp_path_factory.mktemp("made-run")
    work = root / "kiln-work"
    src = root / "model"
    src.mkdir()
    (src / "config.json").write_text('{"dim": 64}')
    (src / "model.safetensors").write_bytes(os.urandom(20_000))
    storage.upload_dir(src, MODEL_URI, storage.S3Settings(local_root=str(work / "s3")))
    reg = ModelRegistry(f"sqlite:///{work / 'mlflow.db'}")
    reg.register(
        MODEL_NAME, MODEL_URI, training_run_id="run-1", tags={"eval_gate": "passed"}, metrics={}
    )
    return work


@pytest.fixture
def after_make_run(made_run, bare_cwd) -> Path:
    """`bare_cwd` holding a copy of `made_run` as ./kiln-work."""
    shutil.copytree(made_run, bare_cwd / "kiln-work")
    return bare_cwd


# ----------------------------------------------------------------------- 1. the error boundary
def test_missing_s3_credentials_say_which_env_vars_to_set(bare_cwd, monkeypatch, capsys):
    # boto3 signs a request before it connects: without credentials no server is needed
    monkeypatch.setenv("AWS_S3_ENDPOINT", closed_url())
    assert main(["artifacts", "list", "s3://kiln/models"]) == 1
    line = error_line(capsys.readouterr().err, "artifacts list")
    assert "no S3 credentials" in line
    assert "AWS_ACCESS_KEY_ID" in line and "AWS_SECRET_ACCESS_KEY" in line
    assert "data connection" in line


def test_s3_failing_after_retries_is_one_line_naming_the_endpoint(bare_cwd, monkeypatch, capsys):
    url = closed_url()
    monkeypatch.setenv("AWS_S3_ENDPOINT", url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("KILN_S3_RETRIES", "2")
    monkeypatch.setenv("KILN_S3_RETRY_BACKOFF_S", "0.1")
    assert main(["artifacts", "list", "s3://kiln/models"]) == 1
    line = error_line(capsys.readouterr().err, "artifacts list")
    assert f"S3 at {url} still failing after 2 attempts" in line


def test_s3_refusing_a_request_is_one_line(s3_server, capsys):
    assert main(["artifacts", "list", "s3://no-such-bucket-kiln/x"]) == 1
    line = error_line(capsys.readouterr().err, "artifacts list")
    assert "S3 refused the request" in line and "NoSuchBucket" in line


def test_bad_config_is_one_line_and_verbose_adds_the_traceback(bare_cwd, capsys):
    assert main(["config", "--set", "model.dim=lots"]) == 2
    line = error_line(capsys.readouterr().err, "config")
    assert "model.dim" in line
    assert main(["-v", "config", "--set", "model.dim=lots"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1] == line


def test_unknown_exceptions_are_bugs_and_keep_their_traceback():
    assert user_error(KeyError("step")) is None
    assert user_error(RuntimeError("CUDA error: an illegal memory access")) is None
    assert user_error(ValueError("train.max_steps must be >= 1")) == (
        "train.max_steps must be >= 1",
        2,
    )


def test_resume_with_another_model_shape_names_the_checkpoint(bare_cwd, capsys):
    from kiln.components.common.config import load_config
    from kiln.components.tokenization import tokenize
    from kiln.pipelines.corpus import help_topics

    text = bare_cwd / "corpus.txt"
    text.write_text("\n\n".join(t for _, t in help_topics())[:200_000])
    cfg = load_config("tiny", overrides=["tokenizer.vocab_size=512", "tokenizer.workers=1"])
    tokenize(text, bare_cwd / "tokens", cfg.tokenizer)
    train = ["train", "--tokens", "tokens", "--output", "out", "--set", "model.dim=32",
             "--set", "model.n_layers=1", "--set", "data.seq_len=16", "--set", "train.max_steps=2",
             "--set", "train.ckpt_every=2", "--set", "train.eval_every=0",
             "--set", "train.micro_batch_size=2", "--set", "train.sample_tokens=0"]  # fmt: skip
    assert main(train) == 0
    capsys.readouterr()
    assert main([*train, "--resume", "--set", "model.dim=128"]) == 2
    line = error_line(capsys.readouterr().err, "train")
    assert "checkpoint in out/checkpoints/step_" in line
    assert "was trained with a different model shape (dim 32 there, 128 now)" in line
    assert line.endswith("drop the --set model.* overrides or use a new --output")


# ---------------------------------------------------------------- 2. servers that do not answer
@pytest.mark.parametrize(
    "argv, command, what",
    [
        (["submit", "--data", "s3://kiln/corpus", "--host"], "submit", "KFP API server"),
        (["runs", "list", "--host"], "runs list", "KFP API server"),
        (["models", "list", "--tracking-uri"], "models list", "MLflow tracking server"),
    ],
)
def test_a_server_that_does_not_answer_fails_in_seconds(bare_cwd, capsys, argv, command, what):
    url = closed_url()
    t0 = time.monotonic()
    assert main([*argv, url]) == 1
    assert time.monotonic() - t0 < 20
    line = error_line(capsys.readouterr().err, command)
    assert what in line and url in line and "does not answer" in line


# ------------------------------------------------------ 3. artifacts find ./kiln-work by itself
def test_artifacts_read_the_local_stand_in_of_kiln_run(after_make_run, capsys):
    assert main(["artifacts", "list", MODEL_URI]) == 0
    out = capsys.readouterr().out
    assert f"{MODEL_URI}/model.safetensors" in out
    dest = after_make_run / "m"
    assert main(["artifacts", "get", f"models:/{MODEL_NAME}@candidate", str(dest)]) == 0
    assert (dest / "model.safetensors").is_file()


# ------------------------------------------------- 4. a refused download leaves nothing behind
def test_get_leaves_nothing_in_dest_after_a_verification_failure(after_make_run, capsys):
    stored = after_make_run / "kiln-work/s3" / MODEL_URI.removeprefix("s3://")
    (stored / "model.safetensors").write_bytes(b"not the weights")
    dest = after_make_run / "fetched" / "model"
    assert main(["artifacts", "get", MODEL_URI, str(dest)]) == 1
    line = error_line(capsys.readouterr().err, "artifacts get")
    assert "model.safetensors" in line and "does not match" in line
    assert line.count("refused") == 1
    assert not dest.exists() and not (after_make_run / "fetched").exists()
    assert sorted(p.name for p in after_make_run.iterdir()) == ["kiln-work"]


# ------------------------------------------------------------ 5. readers create no stores
def test_read_only_commands_create_nothing_and_say_when_nothing_is_there(bare_cwd, capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no registered models: no MLflow store at ") and out.count("\n") == 1
    assert main(["models", "show", MODEL_NAME]) == 2
    assert "no MLflow store at" in error_line(capsys.readouterr().err, "models show")
    assert main(["artifacts", "get", f"models:/{MODEL_NAME}@champion", "m"]) == 2
    assert "no MLflow store at" in error_line(capsys.readouterr().err, "artifacts get")
    assert main(["artifacts", "list", "kiln-work/s3"]) == 2
    assert "no files there" in error_line(capsys.readouterr().err, "artifacts list")
    assert main(["config"]) == 0
    assert list(bare_cwd.iterdir()) == []


def test_reading_a_local_store_adds_nothing_to_the_cwd(after_make_run, capsys):
    before = sorted(p.relative_to(after_make_run) for p in after_make_run.rglob("*"))
    assert main(["models", "list"]) == 0
    assert MODEL_NAME in capsys.readouterr().out
    assert main(["models", "show", MODEL_NAME]) == 0
    assert main(["artifacts", "list", f"models:/{MODEL_NAME}@candidate"]) == 0
    assert sorted(p.relative_to(after_make_run) for p in after_make_run.rglob("*")) == before


# --------------------------------------------------------- 6. kiln run checks its inputs first
def test_run_with_missing_data_fails_before_any_step(bare_cwd, capsys):
    t0 = time.monotonic()
    assert main(["run", "--data", "does-not-exist"]) == 2
    assert time.monotonic() - t0 < 10
    line = error_line(capsys.readouterr().err, "run")
    assert "--data does-not-exist does not exist" in line
    assert main(["run", "--data", "corpus/*.jsonl"]) == 2
    assert "--data corpus/*.jsonl matches no file" in error_line(capsys.readouterr().err, "run")
    assert list(bare_cwd.iterdir()) == []  # no kiln-work, no log: nothing started


# ----------------------------------------------------- 7. deploy of a model only on this disk
def test_deploy_says_a_local_stand_in_uri_cannot_be_pulled(after_make_run, capsys):
    assert main(["deploy", MODEL_NAME, "--alias", "candidate"]) == 0
    out = capsys.readouterr()
    assert f"storageUri: {MODEL_URI}" in out.out
    warning = [line for line in out.err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "exists only in the local S3 stand-in" in warning[0]
    assert main(["deploy", MODEL_NAME, "--alias", "candidate", "--apply"]) == 2
    line = error_line(capsys.readouterr().err, "deploy")
    assert MODEL_URI in line and "a cluster cannot pull it" in line


# ------------------------------------------------------------------------ 8. a fast --help
def test_building_the_parser_imports_no_heavy_library():
    code = (
        "import sys; import kiln.pipelines.cli as cli; cli.build_parser(); "
        "print(' '.join(m for m in ('torch', 'mlflow', 'ray', 'kfp') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"imported by build_parser(): {done.stdout}"
