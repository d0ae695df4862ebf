"""Kubeflow Trainer v2: the TrainJob Kiln creates, the runtime it runs on, and how it is followed.

The body and the ClusterTrainingRuntime are validated against the vendored CRDs; `run_trainjob`
runs through the real Kubeflow SDK (TrainerClient) against a small fake Kubernetes API on
127.0.0.1. Training in the job's nodes: test_trainjob_resume.py.
"""

from __future__ import annotations

import io
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from kiln.components.common.errors import UserError
from kiln.components.common.kube import DATA_CONNECTION_SECRET, QUEUE_LABEL
from kiln.components.common.pod_security import check_pod_spec, pod_specs
from kiln.components.pretrain.trainjob_launch import (
    DATA_CONNECTION_KEYS,
    RUNTIME,
    run_trainjob,
    trainjob_body,
)

RUNTIME_YAML = (
    Path(__file__).resolve().parents[2]
    / "manifests/cluster/trainer/clustertrainingruntime-torch.yaml"
)


def gpu_body(cfg, **kw):
    cfg.dist.launcher, cfg.dist.workers, cfg.dist.use_gpu = "trainjob", 2, True
    cfg.dist.memory_per_worker = "64Gi"
    return trainjob_body(cfg, "s3://kiln/runs/r1/train/tokens", "/tmp/kiln-jobs/r1", **kw)


def test_body_for_two_gpu_nodes_is_valid_and_names_the_secret_only(
    tiny_cfg, validate_crd, secret_canary
):
    body = gpu_body(tiny_cfg, queue_name="team-a")
    validate_crd(body)
    secret_canary.assert_absent(json.dumps(body), "the TrainJob")
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", body["metadata"]["name"])  # CRD's CEL rule
    assert body["metadata"]["labels"] == {QUEUE_LABEL: "team-a"}
    spec, trainer = body["spec"], body["spec"]["trainer"]
    assert spec["runtimeRef"] == {"name": RUNTIME, "kind": "ClusterTrainingRuntime"}
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 1
    per_node = {"nvidia.com/gpu": "1", "memory": "64Gi"}
    assert trainer["resourcesPerNode"] == {"requests": per_node, "limits": per_node}
    by_name = {e["name"]: e for e in trainer["env"]}
    for key in DATA_CONNECTION_KEYS:  # by reference, never a value
        ref = {"name": DATA_CONNECTION_SECRET, "key": key, "optional": True}
        assert by_name[key] == {"name": key, "valueFrom": {"secretKeyRef": ref}}
    assert json.loads(by_name["KILN_TRAINJOB_CONFIG"]["value"])["dist"]["workers"] == 2
    assert trainer["command"][:2] == ["bash", "-c"] and "torchrun" in trainer["command"][2]
    assert "from kiln.components.pretrain.trainjob_node import main" in trainer["command"][2]


def test_body_without_queue_and_with_a_shared_volume_is_valid(tiny_cfg, validate_crd):
    tiny_cfg.dist.launcher = "trainjob"
    body = trainjob_body(
        tiny_cfg,
        "/shared/t",
        "/shared/o",
        queue_name="",
        shared_pvc="kiln-shared",
        shared_mount="/shared",
    )
    validate_crd(body)
    assert QUEUE_LABEL not in body["metadata"].get("labels", {})
    assert body["spec"]["trainer"]["numNodes"] == 1  # workers=0: one node
    assert "resourcesPerNode" not in body["spec"]["trainer"]  # CPU: the runtime's defaults
    (patch,) = body["spec"]["runtimePatches"]
    pod = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]
    assert pod["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"] == {
        "claimName": "kiln-shared"
    }


def test_cluster_training_runtime_is_valid_restricted_and_what_the_body_names(
    tiny_cfg, validate_crd
):
    runtime = yaml.safe_load(RUNTIME_YAML.read_text())
    validate_crd(runtime)
    assert runtime["metadata"]["name"] == RUNTIME
    assert runtime["metadata"]["labels"]["trainer.kubeflow.org/framework"] == "torch"
    assert "torch" in runtime["spec"]["mlPolicy"]
    (job,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    # The SDK and the Trainer find the trainer container by these names and this label.
    assert job["name"] == "node"
    assert job["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"]
    assert [c["name"] for c in job["template"]["spec"]["template"]["spec"]["containers"]] == [
        "node"
    ]
    for where, spec in pod_specs(runtime):
        assert not check_pod_spec(spec, where, openshift=True)


def test_no_kubernetes_config_is_a_one_line_error(
    tokens_dir, tiny_cfg, tmp_path, monkeypatch, capsys
):
    from kiln.pipelines.cli import main

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(UserError, match="needs a Kubernetes cluster"):
        run_trainjob(gpu_body(tiny_cfg))
    args = ["train", "--tokens", str(tokens_dir), "--output", str(tmp_path / "out")]
    assert main([*args, "--set", "dist.launcher=trainjob", "--workers", "2"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("kiln train: error: dist.launcher=trainjob needs a Kubernetes cluster")


# ------------------------------------------------------------------- a fake Kubernetes API server
class FakeTrainerAPI(BaseHTTPRequestHandler):
    """TrainJobs, the runtime, one node pod and its log: what TrainerClient reads."""

    jobs: dict[str, dict] = {}
    created: list[dict] = []
    outcome = "Complete"

    def log_message(self, *args):
        pass

    def _send(self, code: int, body) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = urlparse(self.path).path
        name = path.rsplit("/", 1)[-1]
        if path.endswith(f"/clustertrainingruntimes/{RUNTIME}"):
            return self._send(200, yaml.safe_load(RUNTIME_YAML.read_text()))
        if "/trainjobs/" in path and name in self.jobs:
            return self._send(200, self.jobs[name])
        if path.endswith("/pods"):
            pod = {
                "metadata": {
                    "name": "node-0-pod",
                    "labels": {
                        "jobset.sigs.k8s.io/replicatedjob-name": "node",
                        "batch.kubernetes.io/job-completion-index": "0",
                    },
                },
                "spec": {"containers": [{"name": "node", "image": "kiln"}]},
                "status": {"phase": "Succeeded"},
            }
            return self._send(200, {"kind": "PodList", "apiVersion": "v1", "items": [pod]})
        if path.endswith("/pods/node-0-pod/log"):
            return self._send(200, "step 1 | loss 5.0\nstep 2 | loss 4.0\n")
        self._send(404, {"kind": "Status", "apiVersion": "v1", "code": 404, "reason": "NotFound"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.created.append(json.loads(json.dumps(body)))
        body["metadata"].update(namespace="kiln", creationTimestamp="2026-01-01T00:00:00Z")
        condition = {"type": self.outcome, "status": "True", "reason": self.outcome, "message": ""}
        condition["lastTransitionTime"] = "2026-01-01T01:00:00Z"
        body["status"] = {"conditions": [condition]}
        self.jobs[body["metadata"]["name"]] = body
        self._send(201, body)

    def do_DELETE(self):
        self.jobs.pop(urlparse(self.path).path.rsplit("/", 1)[-1], None)
        self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})


@pytest.fixture
def fake_api(monkeypatch):
    FakeTrainerAPI.jobs, FakeTrainerAPI.created, FakeTrainerAPI.outcome = {}, [], "Complete"
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeTrainerAPI)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    from kiln.components.common import kube

    url, real = f"http://127.0.0.1:{server.server_address[1]}", kube.api_client
    monkeypatch.setattr(kube, "api_client", lambda host=None: real(url))
    try:
        yield FakeTrainerAPI
    finally:
        server.shutdown()
        server.server_close()


def test_run_trainjob_creates_exactly_the_body_and_streams_node_0(fake_api, tiny_cfg):
    body = gpu_body(tiny_cfg)
    log = io.StringIO()
    assert run_trainjob(body, namespace="kiln", stream=log) == body["metadata"]["name"]
    assert fake_api.created == [body]
    assert "step 2 | loss 4.0\n" in log.getvalue()
    # A retried step replaces the finished attempt; the checkpoints it left stay in storage.
    run_trainjob(body, namespace="kiln", stream=io.StringIO())
    assert fake_api.created == [body, body]


def test_failed_trainjob_says_where_to_look(fake_api, tiny_cfg):
    fake_api.outcome = "Failed"
    with pytest.raises(RuntimeError, match="kubectl -n kiln describe trainjob kiln-train-"):
        run_trainjob(gpu_body(tiny_cfg), namespace="kiln", stream=io.StringIO())


def test_missing_runtime_says_what_to_install(fake_api, tiny_cfg):
    with pytest.raises(UserError, match="not found .*manifests/cluster/trainer"):
        run_trainjob(gpu_body(tiny_cfg, runtime="other"), namespace="kiln")
    assert fake_api.created == []
