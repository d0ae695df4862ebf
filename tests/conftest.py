"""Shared fixtures: real local services (moto S3 server, MLflow server), a pausable TCP proxy for
fault tests, and a secret canary. Every server binds 127.0.0.1 on a free port and is always stopped.

    def test_x(s3_server):        # AWS_* env points at moto; AWS_S3_BUCKET is a fresh bucket
    def test_y(s3_proxy):         # same, but through a proxy the test can pause()/resume()
    def test_z(mlflow_env):       # MLFLOW_TRACKING_URI points at a real `mlflow server`
    def test_w(secret_canary):    # a random secret in env; secret_canary.assert_absent(text)
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

_VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tool(name: str) -> str:
    path = _VENV_BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return found


def _wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url}: not ready after {timeout}s:\n{log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------------------- S3
@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `moto_server` for the session; tests isolate themselves with fresh buckets."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [_tool("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        _wait_http(f"{endpoint}/moto-api/", proc, 30, log)
        yield endpoint
    finally:
        _stop(proc)


def _point_env_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, bucket: str) -> None:
    monkeypatch.setenv("AWS_S3_ENDPOINT", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    secret = os.environ.get("KILN_TEST_SECRET_CANARY", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_S3_BUCKET", bucket)
    monkeypatch.delenv("KILN_S3_LOCAL_ROOT", raising=False)
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def s3_server(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """AWS_* env pointed at the moto server, with a fresh empty bucket in AWS_S3_BUCKET."""
    import boto3

    bucket = f"kiln-test-{uuid.uuid4().hex[:12]}"
    _point_env_at(monkeypatch, moto_endpoint, bucket)
    boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    yield moto_endpoint


class TcpProxy:
    """A 127.0.0.1 TCP proxy to `upstream` that a test can pause (drop every connection, and
    close new ones at once: the server looks unreachable) and resume, by hand or with
    `outage_after(n_bytes, seconds)`: triggered by traffic, so it always lands mid-transfer."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.paused = threading.Event()
        self.bytes_up = 0  # client → server bytes forwarded so far
        self._outage: tuple[int, float] | None = None
        self.outages = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pause(self) -> None:
        self.paused.set()
        with self._lock:
            for c in self._conns:
                _close(c)
            self._conns.clear()

    def resume(self) -> None:
        self.paused.clear()

    def outage_after(self, n_bytes: int, seconds: float) -> None:
        """Once `n_bytes` more have gone upstream, be unreachable for `seconds` (once)."""
        self._outage = (self.bytes_up + n_bytes, seconds)

    def _maybe_start_outage(self) -> None:
        with self._lock:
            due = self._outage is not None and self.bytes_up >= self._outage[0]
            seconds = self._outage[1] if due else 0.0
            if due:
                self._outage = None
                self.outages += 1
        if due:
            self.pause()
            threading.Timer(seconds, self.resume).start()

    def close(self) -> None:
        self._closed = True
        self.pause()
        _close(self._listener)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.paused.is_set():
                _close(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b, up in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(a, b, up), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(65536):
                if self.paused.is_set():
                    break
                dst.sendall(data)
                if upstream:
                    self.bytes_up += len(data)
                    self._maybe_start_outage()
        except OSError:
            pass
        _close(src)
        _close(dst)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@pytest.fixture
def s3_proxy(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TcpProxy]:
    """Like s3_server, but AWS_S3_ENDPOINT goes through a TcpProxy the test can pause/resume."""
    proxy = TcpProxy(int(s3_server.rsplit(":", 1)[1]))
    monkeypatch.setenv("AWS_S3_ENDPOINT", proxy.endpoint)
    try:
        yield proxy
    finally:
        proxy.close()


# --------------------------------------------------------------------------------------- MLflow
@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` (sqlite backend, local artifact store); yields its tracking URI."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    env = dict(os.environ)
    env.update(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    log = root / "server.log"
    cmd = [
        _tool("mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    try:
        uri = f"http://127.0.0.1:{port}"
        _wait_http(f"{uri}/health", proc, 90, log)
        yield uri
    finally:
        _stop(proc)


@pytest.fixture
def mlflow_env(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """MLFLOW_TRACKING_URI set to the session's MLflow server (and no inherited run id)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return mlflow_server


# ------------------------------------------------------------------------------- secret canary
class SecretCanary:
    """A random secret placed in the environment; assert it never leaks into outputs."""

    def __init__(self, value: str) -> None:
        self.value = value

    def assert_absent(self, text: str, where: str = "output") -> None:
        assert self.value not in text, f"secret canary leaked into {where}"

    def assert_absent_from_mlflow_run(self, run_id: str) -> None:
        """Check the run's params, tags and metric names (uses MLFLOW_TRACKING_URI)."""
        from mlflow.tracking import MlflowClient

        data = MlflowClient().get_run(run_id).data
        for kind, mapping in (("params", data.params), ("tags", data.tags)):
            self.assert_absent(repr(sorted(mapping.items())), f"MLflow {kind} of run {run_id}")
        self.assert_absent(repr(sorted(data.metrics)), f"MLflow metric names of run {run_id}")


@pytest.fixture
def secret_canary(monkeypatch: pytest.MonkeyPatch) -> SecretCanary:
    """Sets AWS_SECRET_ACCESS_KEY (and KILN_TEST_SECRET_CANARY) to a fresh random value."""
    value = f"canary-{secrets.token_hex(12)}"
    monkeypatch.setenv("KILN_TEST_SECRET_CANARY", value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", value)
    return SecretCanary(value)


# ------------------------------------------------------------------------------------- Ray head
@pytest.fixture
def ray_head(tmp_path):
    """`ray start --head --block` on 127.0.0.1 with the dashboard (Jobs API).

    It runs in its own process session and is stopped by signalling that session only, so
    other Ray clusters on the machine are left alone (unlike `ray stop`).
    """
    import signal

    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent))
    port, dash, agent, agent_grpc, metrics, renv = (free_port() for _ in range(6))
    # As in the cluster image, `kiln` is on the head's PATH (the job entrypoint is `kiln train ...`).
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "GLOO_SOCKET_IFNAME": "lo", "PATH": path}
    cmd = [ray_bin, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
           "--num-cpus=2", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash}", "--disable-usage-stats",
           # Free ports for the agents too: Ray's fixed defaults (52365, ...) may be held by
           # another Ray on this machine, and the Jobs API needs the agent.
           f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
           f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={renv}"]  # fmt: skip
    log = open(tmp_path / "ray-head.log", "w")  # noqa: SIM115
    head = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{dash}"
    try:
        _wait_http(f"{url}/api/version", head, 120, tmp_path / "ray-head.log")
        yield url
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=10)  # Ray drains for up to 30 s on SIGTERM: a test head need not
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        log.close()
        _forget_ray_address(port)


def _forget_ray_address(port: int) -> None:
    """Remove `ray start`'s note of its address (RAY_TMPDIR/ray/ray_current_cluster), as `ray stop`
    does, when it names this head (by port: Ray writes the host's IP for 127.0.0.1). Left behind,
    Ray's address auto-detection keeps finding the dead head: each later Ray Train run waits ~12 s
    at shutdown for its placement-group cleaner, whose state-API queries hang on that address."""
    base = os.environ.get("RAY_TMPDIR") or (
        os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None
    )
    note = Path(base or "/tmp") / "ray" / "ray_current_cluster"
    if note.is_file() and note.read_text().strip().rpartition(":")[2] == str(port):
        note.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------- CRD schemas
@pytest.fixture(scope="session")
def validate_crd():
    """`validate_crd(obj)`: jsonschema-validate a custom resource against its CRD from
    tests/schemas/crds (upstream files, gzipped; `KILN_CRD_SCHEMAS` names another folder), with
    unknown fields as errors (kubectl --validate=strict). For tests outside tests/platform, whose
    conftest has the same check over its `crd_schemas`."""
    import gzip

    import jsonschema
    import yaml

    folder = Path(os.environ.get("KILN_CRD_SCHEMAS") or Path(__file__).parent / "schemas" / "crds")
    schemas = {}
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yaml.gz")]):
        data = path.read_bytes()
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        crd = yaml.load(gzip.decompress(data) if path.suffix == ".gz" else data, Loader=loader)
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            schemas[key] = version["schema"]["openAPIV3Schema"]

    def closed(schema):  # structural-schema semantics: unknown fields are errors
        if isinstance(schema, list):
            return [closed(s) for s in schema]
        if not isinstance(schema, dict):
            return schema
        out = {k: closed(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            if not out.get("x-kubernetes-preserve-unknown-fields"):
                out["additionalProperties"] = False
        if out.pop("x-kubernetes-int-or-string", False):
            out.pop("type", None)
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        return out

    def check(obj: dict) -> None:
        key = (obj["apiVersion"], obj["kind"])
        assert key in schemas, f"no CRD schema for {key} in {folder}"
        schema = closed(schemas[key])
        schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: checked by the API
        errors = list(jsonschema.Draft7Validator(schema).iter_errors(obj))
        assert not errors, f"{key[1]}/{obj['metadata'].get('name')}: " + "; ".join(
            f"{'.'.join(map(str, e.path))}: {e.message[:200]}" for e in errors[:5]
        )

    return check
