"""Publish to the Kubeflow Model Registry against a local server that checks every request and
response against the vendored OpenAPI document (`model_registry_server.py`), with moto S3 and a
real MLflow server: the records and their fields, idempotency, an outage between registries,
`kiln models --registry kubeflow` and `kiln deploy --registry kubeflow`."""

from __future__ import annotations

import hashlib
import json
import runpy
import secrets
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from kiln.components.common import kube, storage
from kiln.components.common.config import load_config
from kiln.components.common.errors import Unreachable, UserError
from kiln.components.common.registry import ModelRegistry
from kiln.components.evaluate import read_eval
from kiln.components.publish import kubeflow_registry, publish
from kiln.components.publish.kubeflow_registry import KubeflowRegistry
from kiln.pipelines.cli import main

_server = runpy.run_path(str(Path(__file__).parent / "model_registry_server.py"))
ModelRegistryServer = _server["ModelRegistryServer"]
_free_port = runpy.run_path(str(Path(__file__).parents[1] / "conftest.py"))["free_port"]


@pytest.fixture
def registry(monkeypatch, tmp_path):
    """A fresh validating Model Registry server, its token in $MODEL_REGISTRY_TOKEN, and a pod
    namespace (`team-a`); at teardown, no exchange may have broken the OpenAPI document."""
    token = secrets.token_hex(8)
    monkeypatch.setenv("MODEL_REGISTRY_TOKEN", token)
    (tmp_path / "sa").mkdir()
    (tmp_path / "sa" / "namespace").write_text("team-a\n")
    monkeypatch.setattr(kube, "SERVICE_ACCOUNT_DIR", tmp_path / "sa")
    server = ModelRegistryServer(token=token).start()
    try:
        yield server
    finally:
        server.stop()
    assert server.errors == [], "exchanges that break the OpenAPI document"


def _cfg(registry, *overrides: str):
    name = f"kiln-kf-{uuid.uuid4().hex[:8]}"
    over = [f"tracking.model_name={name}", f"publish.model_registry_url={registry.url}"]
    return load_config("tiny", overrides=[*over, *overrides])


def _publish(run, cfg, prefix: str, **kw):
    bucket = storage.S3Settings.from_env().bucket
    return publish(str(run["model"]), str(run["eval"]), f"s3://{bucket}/{prefix}", cfg, **kw)


def _only(registry, kind: str) -> dict:
    (obj,) = registry.objects[kind].values()
    return obj


def _props(obj: dict) -> dict:
    """customProperties as plain values (`{"val_loss": 2.1, ...}`)."""
    return {k: next(v for f, v in p.items() if f != "metadataType") for k, p in obj["customProperties"].items()}  # fmt: skip


def test_publish_registers_the_version_artifact_and_lineage(
    s3_server, mlflow_env, registry, good_run, tokens_dir
):
    cfg = _cfg(registry)
    run = {"pipeline_run_id": "kfp-run-42", "pipeline_run_name": "kiln-pretrain-x7k2p"}
    out = _publish(good_run, cfg, "kf/r1", tokens_dir=str(tokens_dir), **run)
    reg, kf = out["registered"], out["kubeflow"]
    assert registry.count() == {"registered_models": 1, "model_versions": 1, "model_artifacts": 1}
    rm, mv = _only(registry, "registered_models"), _only(registry, "model_versions")
    ma = _only(registry, "model_artifacts")
    assert kf == {
        "url": registry.url,
        "registered_model_id": rm["id"],
        "model_version_id": mv["id"],
        "model_artifact_id": ma["id"],
        "created": True,
    }
    assert rm["name"] == cfg.tracking.model_name and rm["owner"] == "kiln"
    mlflow = ModelRegistry(mlflow_env).show(reg["name"], version=reg["version"])
    assert mv["name"] == reg["version"] and mv["registeredModelId"] == rm["id"]
    assert mv["author"] == "kiln" and mv["description"] == mlflow["description"]

    report, props = read_eval(good_run["eval"]), _props(mv)
    assert props["val_loss"] == pytest.approx(report["val_loss"])
    assert mv["customProperties"]["val_loss"]["metadataType"] == "MetadataDoubleValue"
    assert {k: props[k] for k in ("perplexity", "bits_per_byte")} == pytest.approx(
        {k: report[k] for k in ("perplexity", "bits_per_byte")}
    )
    config_uri = f"{out['report_uri']}/config.json"
    assert props["config_sha256"] == out["files"][config_uri]
    for key in ("dataset_digest", "tokenizer_digest", "val_set_digest", "code_version"):
        assert props.get(key, "") == mlflow["tags"][key], key  # '' is left out
    assert props["tokenizer_digest"] and props["val_set_digest"] and props["code_version"]
    assert props["eval_gate"] == "passed" and props["pipeline_run_id"] == "kfp-run-42"
    assert props["mlflow_run_id"] == out["mlflow_run_id"] == mlflow["mlflow_run_id"]
    assert props["mlflow_model_version"] == reg["version"]
    assert props["mlflow_model_id"] == reg["model_id"] != ""
    assert props["_registeredFromPipelineRunId"] == "kfp-run-42"
    assert props["_registeredFromPipelineRunName"] == "kiln-pretrain-x7k2p"
    assert props["_registeredFromPipelineProject"] == "team-a"

    bucket, key = storage.split_s3(out["model_uri"])
    assert ma["artifactType"] == "model-artifact" and ma["name"] == rm["name"]
    assert ma["uri"] == out["model_uri"] and ma["storagePath"] == key
    assert ma["modelFormatName"] == "vLLM" and "modelFormatVersion" not in ma
    assert ma["storageKey"] == "kiln-data-connection"
    source = {k: ma[f"modelSource{k}"] for k in ("Kind", "Class", "Group", "Id", "Name")}
    assert source == {
        "Kind": "kfp",
        "Class": "pipelinerun",
        "Group": "team-a",
        "Id": "kfp-run-42",
        "Name": "kiln-pretrain-x7k2p",
    }
    # The MLflow version points back at the Kubeflow records.
    tags = {k: v for k, v in mlflow["tags"].items() if k.startswith("kubeflow.")}
    assert tags == {f"kubeflow.{k}": str(v) for k, v in kf.items() if k != "created"}

    # Publishing the same run again creates nothing, in either registry.
    sent = len(registry.requests)
    again = _publish(good_run, cfg, "kf/r1", tokens_dir=str(tokens_dir), **run)
    assert again["registered"]["version"] == reg["version"]
    assert again["kubeflow"] == {**kf, "created": False}
    assert registry.count() == {"registered_models": 1, "model_versions": 1, "model_artifacts": 1}
    assert [r for r in registry.requests[sent:] if r[0] != "GET"] == []
    assert {status for _, _, status in registry.requests} <= {200, 201, 404}


def test_an_outage_fails_in_one_line_and_a_rerun_completes_the_registration(
    s3_server, mlflow_env, registry, good_run
):
    cfg = _cfg(registry)
    name = cfg.tracking.model_name
    registry.down = True  # down from the start: S3 and MLflow are done, Kubeflow is not
    with pytest.raises(Unreachable) as err:
        _publish(good_run, cfg, "kf/outage")
    message = str(err.value)
    assert "\n" not in message and registry.url in message and "503" in message
    assert "re-run publish to complete the registration" in message
    assert f"{name} v1 is uploaded to s3://" in message
    assert ModelRegistry(mlflow_env).show(name, version="1")["version"] == "1"
    assert registry.count() == {"registered_models": 0, "model_versions": 0, "model_artifacts": 0}

    # Back up, but down again between creating the version and its artifact.
    registry.down = False
    registry.fail_at("POST", r"/model_versions/\d+/artifacts$")
    with pytest.raises(Unreachable, match="re-run publish to complete the registration"):
        _publish(good_run, cfg, "kf/outage")
    assert registry.count() == {"registered_models": 1, "model_versions": 1, "model_artifacts": 0}

    registry.down = False
    out = _publish(good_run, cfg, "kf/outage")
    assert out["registered"]["version"] == "1" and out["kubeflow"]["created"] is True
    assert registry.count() == {"registered_models": 1, "model_versions": 1, "model_artifacts": 1}
    assert _only(registry, "model_artifacts")["uri"] == out["model_uri"]
    tags = ModelRegistry(mlflow_env).show(name, version="1")["tags"]
    assert tags["kubeflow.model_artifact_id"] == out["kubeflow"]["model_artifact_id"]


def test_models_and_deploy_read_the_published_version(
    s3_server, mlflow_env, registry, good_run, capsys
):
    cfg = _cfg(registry)
    name = cfg.tracking.model_name
    out = _publish(good_run, cfg, "kf/cli", pipeline_run_id="kfp-run-7")
    where = ["--registry", "kubeflow", "--registry-url", registry.url]
    assert main(["models", "list", *where]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(name))
    assert line.split()[1:] == ["1", "1", out["kubeflow"]["registered_model_id"]]

    via_config = ["--registry", "kubeflow", "--set", f"publish.model_registry_url={registry.url}"]
    assert main(["models", "show", name, "--version", "1", "--json", *via_config]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["source"] == out["model_uri"] and info["tags"]["eval_gate"] == "passed"
    assert info["metrics"]["val_loss"] == pytest.approx(read_eval(good_run["eval"])["val_loss"])
    assert info["kubeflow"]["model_source_id"] == "kfp-run-7"
    assert main(["models", "show", name, *where]) == 0  # the latest, as text
    text = capsys.readouterr().out
    assert f"{name} version 1" in text and f"source:      {out['model_uri']}" in text

    code = main(["deploy", name, "--version", "1", "--namespace", "ns", *where])
    body = yaml.safe_load(capsys.readouterr().out)
    assert code == 0
    model = body["spec"]["predictor"]["model"]
    assert model["storageUri"] == out["model_uri"] and model["modelFormat"]["name"] == "vLLM"
    assert body["metadata"]["labels"]["kiln.dev/model-version"] == "1"


def test_deploy_refuses_a_kubeflow_version_whose_gate_failed(registry, capsys):
    reg = KubeflowRegistry(registry.url)
    reg.register("kiln-hand", "1", "s3://models/hand/1/model", metadata={"eval_gate": "failed"})
    reg.register("kiln-hand", "2", "s3://models/hand/2/model")  # not registered by publish
    where = ["--registry", "kubeflow", "--registry-url", registry.url, "--namespace", "ns"]
    assert main(["deploy", "kiln-hand", "--version", "1", *where]) == 1
    err = capsys.readouterr().err
    assert "refusing to deploy" in err and "eval_gate='failed'" in err
    assert "--registry kubeflow" in err
    assert main(["deploy", "kiln-hand", "--version", "2", *where]) == 1
    assert "no eval_gate tag" in capsys.readouterr().err
    assert main(["deploy", "kiln-hand", "--version", "1", "--force", *where]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out)["spec"]["predictor"]["model"]["storageUri"].endswith("1/model")
    assert main(["deploy", "kiln-hand", "--alias", "champion", *where]) == 2
    assert "no aliases" in capsys.readouterr().err


def test_listing_reads_every_page_through_the_clients_pager(registry, monkeypatch):
    """One item a page: `list_models` and `show` still see every model and version. The pager
    ends each listing by asking for `nextPageToken=`, the one deviation the server lets through."""
    monkeypatch.setattr(kubeflow_registry, "PAGE_SIZE", 1)
    reg = KubeflowRegistry(registry.url)
    for name, version in [("kiln-a", "1"), ("kiln-a", "2"), ("kiln-b", "1")]:
        reg.register(name, version, f"s3://models/{name}/{version}/model")
    listed = [(m["name"], m["versions"], m["latest"]) for m in reg.list_models()]
    assert listed == [("kiln-a", 2, "2"), ("kiln-b", 1, "1")]
    assert reg.show("kiln-a")["version"] == "2"
    assert registry.tolerated and all("pageSize=1" in r for r in registry.tolerated)


def test_clear_errors_for_a_wrong_token_a_dead_address_and_no_address(registry, capsys):
    with pytest.raises(UserError, match="refused the request .401.* set MODEL_REGISTRY_TOKEN"):
        KubeflowRegistry(registry.url, token="wrong")
    dead = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(Unreachable, match=f"Kubeflow Model Registry at {dead} does not answer"):
        KubeflowRegistry(dead)
    assert main(["models", "list", "--registry", "kubeflow"]) == 2
    assert "--registry-url URL or --set publish.model_registry_url" in capsys.readouterr().err


def test_the_server_rejects_what_breaks_the_document(registry):
    """The checks are real: a request without the required `name` is answered 400 and recorded,
    so is one to a path the document does not have (the v1 API of newer clients), and so is a
    response that breaks its schema. An empty `nextPageToken` alone is let through."""
    path = "/api/model_registry/v1alpha3/registered_models"
    url = f"{registry.url}{path}"
    headers = {"Authorization": f"Bearer {registry.token}", "Content-Type": "application/json"}

    def get(address: str) -> int:
        request = urllib.request.Request(address, headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=10).status
        except urllib.error.HTTPError as e:
            return e.code

    bad = urllib.request.Request(url, data=b'{"owner": "x"}', headers=headers, method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(bad, timeout=10)
    assert err.value.code == 400 and "name" in registry.errors[0]
    assert get(url.replace("/v1alpha3/", "/v1/")) == 400  # its request and its response
    assert [e.split(":")[0] for e in registry.errors[1:]] == [
        "request GET /api/model_registry/v1/registered_models",
        "response 400 to GET /api/model_registry/v1/registered_models",
    ]
    assert get(f"{url}?pageSize=1&nextPageToken=") == 200 and len(registry.errors) == 3
    assert registry.tolerated == [f"GET {path}?pageSize=1&nextPageToken="]
    assert get(f"{url}?pageSize=") == 400 and "pageSize" in registry.errors[3]  # other empties fail
    seen = len(registry.errors)
    registry.objects["registered_models"]["7"] = {"id": "7", "name": "x", "state": "GONE"}
    assert get(url) == 200 and registry.errors[seen].startswith(f"response 200 to GET {path}")
    registry.errors.clear()


def test_the_vendored_document_is_the_one_its_readme_names():
    readme = (_server["DOCUMENT"].parent / "README.md").read_text()
    digest = hashlib.sha256(_server["DOCUMENT"].read_bytes()).hexdigest()
    assert f"| sha256 | `{digest}` |" in readme


def test_model_registry_is_imported_only_when_configured(tmp_path):
    code = (
        "import sys; from kiln.pipelines.cli import main; import kiln.components.publish.run; "
        "main(['models', 'list', '--workdir', sys.argv[1]]); "
        "assert 'model_registry' not in sys.modules and 'mr_openapi' not in sys.modules"
    )
    import subprocess

    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
