"""End to end: `kiln run` (the KFP pipeline on the local runner) against a real MLflow server and a
real S3-compatible server (moto), then `kiln models` / `kiln artifacts` read the results back.

One pipeline run is shared by the tests of this module (it is the slow part: ~1 min on 2 cores).
"""

import contextlib
import hashlib
import io
import json
import secrets
import uuid
from pathlib import Path

import boto3
import pytest

from kiln.components.common.registry import CANDIDATE, CHAMPION, ModelRegistry
from kiln.components.common.storage import split_s3
from kiln.pipelines.cli import main
from kiln.pipelines.corpus import help_topics

MODEL = "kiln-e2e"
STEPS = 12


class Canary:
    """A secret value put in AWS_SECRET_ACCESS_KEY that must never show up anywhere."""

    def __init__(self, value: str) -> None:
        self.value = value

    def assert_absent(self, text: str, where: str) -> None:
        assert self.value not in text, f"secret canary leaked into {where}"

    def assert_absent_from_mlflow_run(self, client, run_id: str) -> None:
        data = client.get_run(run_id).data
        for kind, mapping in (("params", data.params), ("tags", data.tags)):
            self.assert_absent(repr(sorted(mapping.items())), f"MLflow {kind} of run {run_id}")


def _point_env(mp, endpoint: str, bucket: str, mlflow_uri: str, secret: str) -> None:
    """AWS_* at moto (moto accepts any secret: the canary is one), MLflow at the server."""
    for key, value in {
        "AWS_S3_ENDPOINT": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_S3_BUCKET": bucket,
        "MLFLOW_TRACKING_URI": mlflow_uri,
    }.items():
        mp.setenv(key, value)
    for key in ("KILN_S3_LOCAL_ROOT", "AWS_PROFILE", "AWS_SESSION_TOKEN", "MLFLOW_RUN_ID"):
        mp.delenv(key, raising=False)


def _corpus(path: Path, n_docs: int = 400) -> Path:
    """A small real-text corpus: the first chunks of Python's help topics."""
    rows = [{"id": i, "text": t} for (i, t), _ in zip(help_topics(), range(n_docs), strict=False)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, mlflow_server, moto_endpoint):
    """Run the pipeline once; yields (result JSON, captured output, env, workdir)."""
    mp = pytest.MonkeyPatch()
    canary = Canary(f"canary-{secrets.token_hex(12)}")
    bucket = f"kiln-e2e-{uuid.uuid4().hex[:12]}"
    _point_env(mp, moto_endpoint, bucket, mlflow_server, secret=canary.value)
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket=bucket)
    work = tmp_path_factory.mktemp("run")
    corpus = _corpus(work / "corpus.jsonl")
    argv = [
        "run", "--workdir", str(work / "w"), "--data", str(corpus), "--workers", "0",
        "--model-name", MODEL, "--json",
        "--set", f"train.max_steps={STEPS}", "--set", "train.log_every=2",
        "--set", "train.eval_every=0", "--set", "ingest.val_fraction=0.1",
        "--set", "ingest.workers=1", "--set", "tokenizer.workers=1",
        "--set", "tokenizer.vocab_size=1024", "--set", "eval.max_tokens=4096",
    ]  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    text = out.getvalue()
    assert code == 0, err.getvalue()[-3000:] + text[-3000:]
    result = json.loads(text[text.rindex("\n{") + 1 :] if "\n{" in text else text)
    try:
        step_log = (work / "w" / "kiln-run.log").read_text()  # every step's full output
        log = text + err.getvalue() + step_log
        yield {"result": result, "log": log, "s3": s3, "canary": canary}
    finally:
        mp.undo()


@pytest.fixture
def env(e2e, mlflow_server, moto_endpoint, monkeypatch):
    """The same environment the run had, for the read-back tests."""
    bucket = split_s3(e2e["result"]["published"]["model_uri"])[0]
    _point_env(monkeypatch, moto_endpoint, bucket, mlflow_server, secret=e2e["canary"].value)
    return e2e


def test_registered_version_with_metrics_lineage_and_aliases(env):
    pub = env["result"]["published"]
    reg = ModelRegistry(env["result"]["mlflow_uri"])
    candidate = reg.version_by_alias(MODEL, CANDIDATE)
    assert candidate is not None and candidate.version == pub["registered"]["version"]
    assert candidate.source == pub["model_uri"] and pub["model_uri"].startswith("s3://")
    # 12 steps do not beat the unigram baseline of the tokenizer: no first champion.
    assert reg.version_by_alias(MODEL, CHAMPION) is None
    assert pub["champion"]["rule"] == "unigram baseline" and not pub["champion"]["moved"]
    tags = candidate.tags
    assert float(tags["metric.val_loss"]) == pytest.approx(env["result"]["eval"]["val_loss"])
    for key in ("dataset_digest", "training_run_id", "pipeline_run_id", "val_set_digest"):
        assert tags.get(key), f"version tag {key} missing: {sorted(tags)}"
    assert tags["training_run_id"] == env["result"]["run_id"]


def test_mlflow_run_has_config_stepwise_metrics_and_no_secret(env):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["result"]["mlflow_uri"])
    run = client.get_run(env["result"]["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.max_steps"] == str(STEPS)
    assert run.data.params["model.dim"] == "64"  # the tiny preset, resolved once by `prepare`
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(history) >= STEPS // 2 and len({m.step for m in history}) == len(history)
    assert run.data.metrics["eval/val_loss"] == pytest.approx(env["result"]["eval"]["val_loss"])
    assert run.data.metrics["eval/gate_passed"] == 1.0
    assert run.data.tags.get("dataset_digest") and run.data.tags.get("tokenizer_digest")
    env["canary"].assert_absent_from_mlflow_run(client, run.info.run_id)
    env["canary"].assert_absent(env["log"], "kiln run output (all step logs)")


def test_s3_objects_match_their_sha256(env):
    s3, pub = env["s3"], env["result"]["published"]
    bucket, prefix = split_s3(pub["model_uri"])
    model_dir = Path(env["result"]["model_dir"])
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]]
    names = {k.rsplit("/", 1)[-1] for k in keys}
    assert {"config.json", "model.safetensors", "tokenizer.json", "_KILN_MANIFEST.json"} <= names
    for key in keys:
        if key.endswith("_KILN_MANIFEST.json"):
            continue
        obj = s3.get_object(Bucket=bucket, Key=key)
        digest = hashlib.sha256(obj["Body"].read()).hexdigest()
        assert obj["Metadata"]["sha256"] == digest, key
        local = model_dir / key[len(prefix) + 1 :]
        assert hashlib.sha256(local.read_bytes()).hexdigest() == digest, key


def test_models_and_artifacts_cli_read_it_back(env, tmp_path, capsys):
    assert main(["models", "show", MODEL, "--alias", "candidate", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert json.dumps(env["result"]["published"]["model_uri"]) in json.dumps(shown)
    dest = tmp_path / "fetched"
    assert main(["artifacts", "get", f"models:/{MODEL}@candidate", str(dest)]) == 0
    local = Path(env["result"]["model_dir"])
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert (dest / name).read_bytes() == (local / name).read_bytes(), name


def test_publish_again_is_idempotent(env):
    from kiln.components.publish.step import publish_step

    run_dir = Path(env["result"]["run_dir"])
    config_json = json.loads((run_dir / "pretrain" / "trained" / "config.json").read_text())
    again = publish_step(
        str(run_dir / "pretrain" / "trained" / "model"),
        str(run_dir / "evaluate" / "report"),
        str(run_dir / "publish-again"),
        json.dumps(config_json),
        env["result"]["run_id"],
        tokens_dir=str(run_dir / "tokenize" / "tokens"),
        train_dir=str(run_dir / "pretrain" / "trained"),
        end_run=False,
    )
    first = env["result"]["published"]
    assert again["registered"]["version"] == first["registered"]["version"]
    assert again["registered"]["created"] is False
    assert again["model_uri"] == first["model_uri"]
    versions = ModelRegistry(env["result"]["mlflow_uri"]).client.search_model_versions(
        f"name='{MODEL}'"
    )
    assert len(versions) == 1


def test_sft_pipeline_fine_tunes_the_registered_base_into_a_chat_model(env, tmp_path):
    """`kiln run --pipeline sft` from the version registered above, against the same MLflow
    server and S3: the chat model beats its base on held-out assistant tokens, its version names
    the base version, and transformers renders and scores it exactly as Kiln does."""
    transformers = pytest.importorskip("transformers")
    import torch

    from kiln.components.common import storage
    from kiln.components.pretrain.export import import_hf
    from kiln.components.sft.template import render
    from kiln.pipelines.corpus import builtin_conversations

    base_version = env["result"]["published"]["registered"]["version"]
    convs = tmp_path / "convs.jsonl"
    rows = list(builtin_conversations(360))
    convs.write_text("".join(json.dumps(c) + "\n" for c in rows))
    argv = [
        "run", "--pipeline", "sft", "--base", f"models:/{MODEL}/{base_version}",
        "--workdir", str(tmp_path / "w"), "--data", str(convs), "--workers", "0",
        "--model-name", f"{MODEL}-chat", "--json", "--set", "sft.epochs=2",
        "--set", "optim.lr=3e-3", "--set", "train.eval_every=0", "--set", "eval.sample_tokens=8",
    ]  # fmt: skip
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    text = out.getvalue()
    result = json.loads(text[text.rindex("\n{") + 1 :] if "\n{" in text else text)
    report = json.loads(
        (Path(result["run_dir"]) / "sft-evaluate" / "report" / "eval.json").read_text()
    )
    assert report["val_loss"] < report["baseline"]["val_loss"]

    reg = ModelRegistry(result["mlflow_uri"])
    chat = reg.show(f"{MODEL}-chat", version=result["published"]["registered"]["version"])
    assert chat["tags"]["base_model_name"] == MODEL
    assert chat["tags"]["base_model_version"] == base_version
    assert chat["tags"]["conversations_digest"] and chat["tags"]["kind"] == "sft"
    assert "champion" in chat["aliases"]  # the gate required beating the base

    model_dir = tmp_path / "fetched"  # the published copy, sha256-verified
    storage.download_dir(result["published"]["model_uri"], model_dir, verify=True)
    hf_tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    from tokenizers import Tokenizer

    ours = render(Tokenizer.from_file(str(model_dir / "tokenizer.json")), rows[0]["messages"])
    theirs = hf_tok.apply_chat_template(rows[0]["messages"], tokenize=True, return_dict=True)
    assert ours.ids == list(theirs["input_ids"])
    x = torch.tensor([ours.ids])
    with torch.no_grad():
        diff = (import_hf(model_dir).eval()(x) - hf(x).logits).abs().max()
    assert float(diff) < 1e-4
    env["canary"].assert_absent(text, "kiln run --pipeline sft output")
