"""`kiln deploy` against a real MLflow server: dry run prints a CRD-valid InferenceService for the
resolved version, the eval gate is enforced (and --force overrides it), clear errors for unknown
aliases, and --apply creates/replaces the object on a fake Kubernetes API server."""

from __future__ import annotations

import json
import re
import runpy
import shlex
import uuid
from pathlib import Path

import pytest
import yaml

from kiln.components.common import storage
from kiln.components.common.config import load_config
from kiln.components.common.pod_security import check_object
from kiln.components.common.registry import CHAMPION, ModelRegistry
from kiln.components.publish import publish
from kiln.pipelines.cli import build_parser, main

# Reuse the platform tests' CRD validator and fake Kubernetes API (tests are no package).
_platform = runpy.run_path(str(Path(__file__).parents[1] / "platform" / "conftest.py"))
crd_schemas, validate_crd, fake_kube = (
    _platform["crd_schemas"],
    _platform["validate_crd"],
    _platform["fake_kube"],
)


@pytest.fixture
def registered(mlflow_env):
    """A fresh model with v1 (gate passed, champion) and v2 (gate failed, candidate)."""
    reg = ModelRegistry(mlflow_env)
    name = f"kiln-dep-{uuid.uuid4().hex[:8]}"
    sources = {}
    for run, gate in (("r1", "passed"), ("r2", "failed")):
        src = f"s3://models/{name}/{run}/model"
        v = reg.register(
            name, src, training_run_id=run, tags={"eval_gate": gate}, metrics={"val_loss": 3.0}
        )
        sources[v.version] = src
    reg.set_alias(name, "1", CHAMPION)
    return name, sources


def _deploy(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["deploy", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_dry_run_prints_a_valid_inference_service(registered, validate_crd, capsys):
    name, sources = registered
    code, out, err = _deploy(capsys, name, "--alias", "champion", "--namespace", "team-a")
    assert code == 0, err
    body = yaml.safe_load(out)
    validate_crd(body)
    assert check_object(body, openshift=True) == []
    model = body["spec"]["predictor"]["model"]
    assert model["storageUri"] == sources["1"]
    assert model["runtime"] == "kiln-vllm" and model["modelFormat"]["name"] == "vLLM"
    assert body["spec"]["predictor"]["serviceAccountName"] == "kiln-model-server"
    assert body["metadata"]["namespace"] == "team-a"
    assert body["metadata"]["name"] == f"{name}-v1"
    labels = body["metadata"]["labels"]
    assert labels["kiln.dev/model-version"] == "1" and labels["kiln.dev/alias"] == "champion"
    assert labels["kueue.x-k8s.io/queue-name"] == "kiln-queue"  # publish.serving_queue
    # config defaults (publish.serving_*), overridden by --set and by flags
    assert model["resources"]["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    code, out, err = _deploy(
        capsys, name, "--version", "1", "--namespace", "ns",
        "--set", "publish.serving_memory=24Gi", "--gpus", "2", "--max-model-len", "512",
        "--set", "publish.serving_queue=team-gpus",
    )  # fmt: skip
    assert code == 0, err
    assert yaml.safe_load(out)["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-gpus"
    model = yaml.safe_load(out)["spec"]["predictor"]["model"]
    assert model["resources"]["limits"] == {"cpu": "4", "memory": "24Gi", "nvidia.com/gpu": "2"}
    assert "--max-model-len=512" in model["args"] and "--tensor-parallel-size=2" in model["args"]
    code, out, err = _deploy(
        capsys, name, "--version", "1", "--namespace", "ns", "--queue-name", ""
    )
    assert code == 0, err
    assert "kueue.x-k8s.io/queue-name" not in yaml.safe_load(out)["metadata"]["labels"]


def test_gate_failed_version_is_refused_unless_forced(registered, capsys):
    name, sources = registered
    code, out, err = _deploy(capsys, name, "--version", "2", "--namespace", "ns")
    assert code == 1 and out == ""
    assert "refusing to deploy" in err and "version 2" in err and "--force" in err
    assert "eval_gate='failed'" in err
    code, out, err = _deploy(capsys, name, "--version", "2", "--namespace", "ns", "--force")
    assert code == 0, err
    assert "warning" in err and "eval_gate=failed" in err
    body = yaml.safe_load(out)
    assert body["spec"]["predictor"]["model"]["storageUri"] == sources["2"]
    # the candidate alias now points at v2 (registered last): refused by alias too
    code, out, err = _deploy(capsys, name, "--alias", "candidate", "--namespace", "ns")
    assert code == 1 and "version 2" in err


def test_publish_tags_the_version_and_deploy_reads_it(s3_server, mlflow_env, good_run, capsys):
    """The eval_gate tag that deploy checks really lands on the version `publish` registers."""
    bucket = storage.S3Settings.from_env().bucket
    name = f"kiln-dep-{uuid.uuid4().hex[:8]}"
    cfg = load_config("tiny", overrides=[f"tracking.model_name={name}"])
    out = publish(str(good_run["model"]), str(good_run["eval"]), f"s3://{bucket}/dep/r1", cfg)
    info = ModelRegistry(mlflow_env).show(name, version=out["registered"]["version"])
    assert info["tags"]["eval_gate"] == "passed" and "champion" in info["aliases"]
    code, text, err = _deploy(capsys, name, "--alias", "champion", "--namespace", "ns")
    assert code == 0, err
    model = yaml.safe_load(text)["spec"]["predictor"]["model"]
    assert model["storageUri"] == out["model_uri"] == f"s3://{bucket}/dep/r1/model"
    assert "--max-model-len" not in " ".join(model["args"])  # deploy leaves it to the model


def test_version_without_gate_tag_is_refused(mlflow_env, capsys):
    reg = ModelRegistry(mlflow_env)
    name = f"kiln-dep-{uuid.uuid4().hex[:8]}"
    reg.register(name, f"s3://models/{name}/model", training_run_id="hand-made")
    code, out, err = _deploy(capsys, name, "--version", "1", "--namespace", "ns")
    assert code == 1 and "no eval_gate tag" in err


def test_unknown_alias_version_and_model_are_clear_errors(registered, capsys):
    name, _ = registered
    code, _, err = _deploy(capsys, name, "--alias", "staging", "--namespace", "ns")
    assert code == 2 and f"model {name!r} has no alias 'staging'" in err
    code, _, err = _deploy(capsys, name, "--version", "9", "--namespace", "ns")
    assert code == 2 and f"model {name!r} has no version 9" in err
    code, _, err = _deploy(capsys, "kiln-no-such-model", "--alias", "champion")
    assert code == 2 and "no alias 'champion'" in err
    assert "Traceback" not in err


def test_apply_creates_then_replaces_on_the_api_server(
    registered, fake_kube, validate_crd, tmp_path, monkeypatch, capsys
):
    """--apply goes through the real kubeconfig path: the current context's server + namespace."""
    name, sources = registered
    fake_kube.validate = validate_crd
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": fake_kube.url}}],
                "users": [{"name": "me", "user": {}}],
                "contexts": [
                    {
                        "name": "fake",
                        "context": {"cluster": "fake", "user": "me", "namespace": "team-b"},
                    }
                ],
                "current-context": "fake",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    # The client reads $KUBECONFIG once, at import; a fresh `kiln` process would see it there.
    from kubernetes.config import kube_config

    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    key = f"inferenceservices/team-b/{name}-v1"
    for rv in ("1", "2"):  # first create, then replace (a new revision)
        code, out, err = _deploy(capsys, name, "--alias", "champion", "--apply", "--force")
        assert code == 0, err
        assert (
            f"applied inferenceservice/team-b/{name}-v1" in out and f"resourceVersion {rv}" in out
        )
    stored = fake_kube.objects[key]
    assert stored["spec"]["predictor"]["model"]["storageUri"] == sources["1"]
    assert [m for m, _ in fake_kube.requests] == ["POST", "POST", "GET", "PUT"]
    assert fake_kube.rejected == []
    # a refused version sends nothing to the API server
    code, _, err = _deploy(capsys, name, "--version", "2", "--apply")
    assert code == 1 and len(fake_kube.requests) == 4

    def reject(obj):
        raise AssertionError("spec.predictor: invalid")

    fake_kube.validate = reject  # the API server answers 422 Invalid: one line, exit 1
    code, _, err = _deploy(capsys, name, "--version", "1", "--service-name", "other", "--apply")
    assert code == 1 and "applying inferenceservice/team-b/other failed: 422" in err
    assert "Traceback" not in err


def _doc_commands(path: Path) -> list[str]:
    """Every shell line of the doc's ```bash blocks, continuation lines joined."""
    lines, block = [], False
    for raw in path.read_text().splitlines():
        if raw.startswith("```"):
            block = raw.strip() == "```bash"
            continue
        if block:
            if lines and lines[-1].endswith("\\"):
                lines[-1] = lines[-1][:-1] + " " + raw.strip()
            else:
                lines.append(raw.strip())
    return lines


def test_platform_doc_commands_exist():
    """Every `kiln ...` line in docs/platform.md parses with the real CLI, and every
    `kubectl apply -k` names a kustomization in this repo."""
    repo = Path(__file__).resolve().parents[2]
    lines = _doc_commands(repo / "docs" / "platform.md")
    kiln = [ln for ln in lines if ln.startswith("kiln ")]
    assert {ln.split()[1] for ln in kiln} >= {"submit", "runs", "models", "artifacts", "deploy"}
    parser = build_parser()
    for line in kiln:
        line = re.sub(r"\s+(&|#.*)$", "", line)
        argv = [re.sub(r"\$\w+", "X", a) for a in shlex.split(line)[1:]]
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"docs/platform.md: `{line}` is not a valid kiln command line")
    kustomize = [ln.split()[3] for ln in lines if ln.startswith("kubectl apply -k ")]
    assert kustomize and all((repo / k / "kustomization.yaml").is_file() for k in kustomize)
