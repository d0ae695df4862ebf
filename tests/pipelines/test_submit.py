"""`kiln submit` / `kiln runs` against a local HTTP server that checks the KFP v2 REST requests.

No KFP API server can run here, so `FakeKfp` (127.0.0.1, free port) implements the v2beta1
endpoints the client uses and rejects anything a real server would: a missing or wrong bearer
token, a run without an experiment, a run with neither an inline pipeline spec nor a pipeline
version reference, an upload without the pipeline file, parameters that are not the pipeline's.
"""

import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from kiln.pipelines.cli import main

TOKEN = "sha256~test-token-1234567890"
PIPELINE_PARAMS = {
    "corpus_uri", "preset", "overrides", "model_name", "s3_bucket", "mlflow_uri", "ray_address",
    "workers", "gpus_per_worker", "baseline_model", "run_id",
}  # fmt: skip


class FakeKfp:
    """A tiny KFP v2beta1 API: experiments, pipeline upload/versions, runs (in memory)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.experiments: dict[str, dict] = {}
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.runs: dict[str, dict] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlparse(self.path)
                req = {
                    "method": method,
                    "path": url.path,
                    "query": parse_qs(url.query),
                    "auth": self.headers.get("Authorization", ""),
                    "content_type": self.headers.get("Content-Type", ""),
                    "body": raw,
                }
                fake.requests.append(req)
                if req["auth"] != f"Bearer {TOKEN}":
                    return self._reply(401, {"error": "Unauthorized", "code": 16})
                try:
                    code, body = fake.route(req)
                except AssertionError as e:  # a request a real server would refuse
                    code, body = 400, {"error": f"bad request: {e}", "code": 3}
                self._reply(code, body)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -------------------------------------------------------------------------------- routes
    def route(self, req: dict) -> tuple[int, dict]:
        m, path, q = req["method"], req["path"], req["query"]
        if path == "/apis/v2beta1/healthz":
            return 200, {"multi_user": False}
        if path == "/apis/v2beta1/experiments" and m == "GET":
            name = _filter_value(q)
            found = [e for e in self.experiments.values() if e["display_name"] == name]
            return 200, {"experiments": found, "total_size": len(found)}
        if path == "/apis/v2beta1/experiments" and m == "POST":
            body = json.loads(req["body"])
            assert body.get("display_name"), "experiment needs display_name"
            exp = {"experiment_id": str(uuid.uuid4()), "display_name": body["display_name"]}
            self.experiments[exp["experiment_id"]] = exp
            return 200, exp
        if path == "/apis/v2beta1/pipelines" and m == "GET":
            name = _filter_value(q)
            found = [p for p in self.pipelines.values() if p["display_name"] == name]
            return 200, {"pipelines": found, "total_size": len(found)}
        if path == "/apis/v2beta1/pipelines/upload" and m == "POST":
            spec = _uploaded_spec(req)
            pid = str(uuid.uuid4())
            name = q["name"][0]
            self.pipelines[pid] = {"pipeline_id": pid, "display_name": name}
            self.versions[pid] = [_version(pid, name, spec)]
            return 200, self.pipelines[pid]
        if path == "/apis/v2beta1/pipelines/upload_version" and m == "POST":
            spec = _uploaded_spec(req)
            pid = q["pipelineid"][0]
            assert pid in self.pipelines, f"unknown pipeline {pid}"
            version = _version(pid, q["name"][0], spec)
            self.versions[pid].insert(0, version)
            return 200, version
        if match := re.fullmatch(r"/apis/v2beta1/pipelines/([^/]+)/versions", path):
            return 200, {"pipeline_versions": self.versions.get(match[1], [])}
        if path == "/apis/v2beta1/runs" and m == "POST":
            return 200, self._create_run(json.loads(req["body"]))
        if path == "/apis/v2beta1/runs" and m == "GET":
            runs = list(self.runs.values())[::-1]
            return 200, {"runs": runs, "total_size": len(runs)}
        if match := re.fullmatch(r"/apis/v2beta1/runs/([^/:]+)", path):
            if match[1] not in self.runs:
                return 404, {"error": "run not found", "code": 5}
            return 200, self.runs[match[1]]
        return 404, {"error": f"no route {m} {path}", "code": 5}

    def _create_run(self, body: dict) -> dict:
        assert body.get("display_name"), "run needs display_name"
        assert body.get("experiment_id") in self.experiments, "run needs a known experiment_id"
        has_spec = bool(body.get("pipeline_spec"))
        ref = body.get("pipeline_version_reference") or {}
        assert has_spec != bool(ref), "exactly one of pipeline_spec / pipeline_version_reference"
        if ref:
            versions = self.versions.get(ref.get("pipeline_id"), [])
            assert any(v["pipeline_version_id"] == ref.get("pipeline_version_id") for v in versions)
            spec = next(
                v for v in versions if v["pipeline_version_id"] == ref["pipeline_version_id"]
            )
            spec = spec["pipeline_spec"]
        else:
            spec = body["pipeline_spec"]
            if "platform_spec" in spec:  # the API's shape for a spec with kubernetes config
                assert "kubernetes" in spec["platform_spec"]["platforms"], "bad platform_spec"
                spec = spec["pipeline_spec"]
        declared = set(spec["root"]["inputDefinitions"]["parameters"])
        params = body.get("runtime_config", {}).get("parameters", {})
        assert set(params) <= declared, f"unknown parameters {set(params) - declared}"
        run = {
            "run_id": str(uuid.uuid4()),
            "display_name": body["display_name"],
            "experiment_id": body["experiment_id"],
            "state": "PENDING",
            "created_at": "2026-01-01T00:00:00Z",
            "runtime_config": {"parameters": params},
            "pipeline_spec": body.get("pipeline_spec"),
            "pipeline_version_reference": ref or None,
        }
        self.runs[run["run_id"]] = run
        return run


def _filter_value(q: dict) -> str:
    predicates = json.loads(q["filter"][0])["predicates"]
    assert predicates[0]["operation"] in ("EQUALS", 1), predicates
    return predicates[0].get("string_value") or predicates[0].get("stringValue")


def _uploaded_spec(req: dict) -> dict:
    assert req["content_type"].startswith("multipart/form-data"), "upload must be multipart"
    body = req["body"].decode()
    assert 'name="uploadfile"' in body, "upload needs the uploadfile part"
    yaml_text = body.split("\r\n\r\n", 1)[1].rsplit("\r\n--", 1)[0]
    return next(d for d in yaml.safe_load_all(yaml_text) if "root" in d)


def _version(pid: str, name: str, spec: dict) -> dict:
    return {
        "pipeline_id": pid,
        "pipeline_version_id": str(uuid.uuid4()),
        "display_name": name,
        "pipeline_spec": spec,
    }


@pytest.fixture
def kfp_server(monkeypatch):
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")  # no token from a real cluster
    server = FakeKfp()
    try:
        yield server
    finally:
        server.close()


def _submit(server, *extra) -> int:
    return main(
        ["submit", "--host", server.url, "--token", TOKEN, "--data", "s3://corpus/raw/",
         "--preset", "small", "--set", "train.max_steps=123", "--experiment", "kiln-test",
         "--workers", "2", "--gpus-per-worker", "1", "--ray-address", "http://ray-head:8265",
         *extra]
    )  # fmt: skip


def test_submit_creates_a_run_with_the_parameters(kfp_server, capsys, secret_canary):
    assert _submit(kfp_server) == 0
    out = capsys.readouterr().out
    (run,) = kfp_server.runs.values()
    assert f"run id: {run['run_id']}" in out
    assert f"{kfp_server.url}/#/runs/details/{run['run_id']}" in out
    params = run["runtime_config"]["parameters"]
    assert params["corpus_uri"] == "s3://corpus/raw/"
    assert params["preset"] == "small"
    assert json.loads(params["overrides"]) == ["train.max_steps=123"]
    assert params["workers"] == 2 and params["gpus_per_worker"] == 1
    assert params["ray_address"] == "http://ray-head:8265"
    assert set(params) <= PIPELINE_PARAMS
    # the inline spec is the compiled pipeline (with its kubernetes platform config: the
    # data-connection secret by name); every request carried the bearer token
    spec = run["pipeline_spec"]
    assert "exec-pretrain" in json.dumps(spec["pipeline_spec"])
    assert "kiln-data-connection" in json.dumps(spec["platform_spec"])
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in kfp_server.requests)
    [exp] = kfp_server.experiments.values()
    assert exp["display_name"] == "kiln-test" and run["experiment_id"] == exp["experiment_id"]
    # the data-connection secret's value never travels, only its name
    for r in kfp_server.requests:
        secret_canary.assert_absent(r["body"].decode(errors="replace"), "a KFP API request")


def test_submit_upload_as_uploads_then_versions(kfp_server, capsys):
    assert _submit(kfp_server, "--upload-as", "kiln-pretrain") == 0
    assert _submit(kfp_server, "--upload-as", "kiln-pretrain") == 0
    capsys.readouterr()
    paths = [(r["method"], r["path"]) for r in kfp_server.requests]
    assert ("POST", "/apis/v2beta1/pipelines/upload") in paths
    assert ("POST", "/apis/v2beta1/pipelines/upload_version") in paths
    [pid] = kfp_server.pipelines
    assert len(kfp_server.versions[pid]) == 2
    runs = list(kfp_server.runs.values())
    refs = [r["pipeline_version_reference"] for r in runs]
    assert all(ref and ref["pipeline_id"] == pid for ref in refs)
    assert refs[0]["pipeline_version_id"] != refs[1]["pipeline_version_id"]
    assert len(kfp_server.experiments) == 1  # the experiment is reused, not duplicated


def test_token_from_env_and_wrong_token_fails(kfp_server, monkeypatch, capsys):
    monkeypatch.setenv("KFP_TOKEN", TOKEN)
    args = ["submit", "--host", kfp_server.url, "--data", "s3://c/"]
    assert main(args) == 0
    monkeypatch.setenv("KFP_TOKEN", "wrong")
    assert main(args) == 2  # a one-line error, not a traceback after 30 s of retries
    assert "HTTP 401, the token was refused" in capsys.readouterr().err
    assert len(kfp_server.runs) == 1


def test_runs_list_and_get(kfp_server, capsys):
    assert _submit(kfp_server) == 0
    (run_id,) = kfp_server.runs
    capsys.readouterr()
    assert main(["runs", "list", "--host", kfp_server.url, "--token", TOKEN, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in listed] == [run_id] and listed[0]["state"] == "PENDING"
    assert main(["runs", "get", run_id, "--host", kfp_server.url, "--token", TOKEN]) == 0
    out = capsys.readouterr().out
    assert "PENDING" in out and run_id in out
    kfp_server.runs[run_id]["state"] = "FAILED"
    assert main(["runs", "get", run_id, "--host", kfp_server.url, "--token", TOKEN]) == 1


def test_token_from_the_kube_config(kfp_server, tmp_path, monkeypatch, capsys):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "dev",
                "contexts": [{"name": "dev", "context": {"cluster": "c", "user": "u"}}],
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": TOKEN}}],
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert main(["submit", "--host", kfp_server.url, "--data", "s3://c/"]) == 0
    assert len(kfp_server.runs) == 1
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in kfp_server.requests)


def test_submit_the_sft_pipeline_with_its_base(kfp_server, capsys):
    argv = [
        "submit", "--host", kfp_server.url, "--token", TOKEN, "--data", "s3://chats/v1/",
        "--pipeline", "sft", "--preset", "small", "--base", "models:/kiln-llama@champion",
    ]  # fmt: skip
    assert main(argv) == 0
    (run,) = kfp_server.runs.values()
    params = run["runtime_config"]["parameters"]
    assert params["preset"] == "sft-small" and params["corpus_uri"] == "s3://chats/v1/"
    assert json.loads(params["overrides"]) == ["sft.base=models:/kiln-llama@champion"]
    assert run["display_name"].startswith("kiln-sft-")
    assert "exec-sft-evaluate" in json.dumps(run["pipeline_spec"]["pipeline_spec"])


def test_token_from_the_pods_service_account(kfp_server, tmp_path, monkeypatch):
    """In a workbench there is no kube config: the notebook's service-account token is used."""
    from kiln.components.common import kube

    (tmp_path / "token").write_text(TOKEN + "\n")
    monkeypatch.setattr(kube, "SERVICE_ACCOUNT_DIR", tmp_path)
    assert main(["submit", "--host", kfp_server.url, "--data", "s3://c/"]) == 0
    assert len(kfp_server.runs) == 1
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in kfp_server.requests)


def test_wait_for_run_reports_each_state_until_the_run_ends(kfp_server, monkeypatch):
    from kiln.pipelines.remote import SubmitRequest, connect, submit, wait_for_run

    client = connect(kfp_server.url, token=TOKEN)
    run_id = submit(client, SubmitRequest("s3://c/")).run_id
    states, get_run = iter(["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"]), client.get_run

    def poll(rid: str):  # the server moves the run on between two polls
        kfp_server.runs[rid]["state"] = next(states)
        return get_run(rid)

    monkeypatch.setattr(client, "get_run", poll)
    seen: list[str] = []
    info = wait_for_run(client, run_id, poll_s=0.01, echo=seen.append)
    assert info["state"] == "SUCCEEDED" and info["run_id"] == run_id
    assert [line.split("] ")[1] for line in seen] == ["PENDING", "RUNNING", "SUCCEEDED"]
    monkeypatch.setattr(client, "get_run", get_run)
    kfp_server.runs[run_id]["state"] = "RUNNING"
    with pytest.raises(TimeoutError, match="still RUNNING"):
        wait_for_run(client, run_id, poll_s=0.05, timeout_s=0.1, echo=None)
