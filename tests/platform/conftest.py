"""Fixtures for the platform tests: rendered kustomize overlays, CRD schemas, a fake Kubernetes API.

CRD schemas are vendored in tests/schemas/crds (upstream files, gzipped; see its README), so every
test runs on a plain clone; `KILN_CRD_SCHEMAS` points at another folder of CRD files (`*.yaml` or
`*.yaml.gz`) instead. Tests that need `kubectl` (for `kubectl kustomize`) skip cleanly without it.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
VENDORED_CRDS = REPO / "tests" / "schemas" / "crds"  # see its README
# Every kustomization a user applies: the overlays and the admin's cluster-scoped Kueue objects.
KUSTOMIZATIONS = ["overlays/openshift", "overlays/kubeflow", "overlays/dev", "cluster/kueue"]
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def crd_dir() -> Path:
    return Path(os.environ.get("KILN_CRD_SCHEMAS") or VENDORED_CRDS)


def crd_files(folder: Path) -> list[Path]:
    """The CRD files in `folder`: upstream `*.yaml` as is, or gzipped (`*.yaml.gz`)."""
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yaml.gz")])


def read_crd(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    return yaml.load(gzip.decompress(data) if path.suffix == ".gz" else data, Loader=_Loader)


@pytest.fixture(scope="session")
def kustomize():
    """`kustomize(path) -> [objects]` with `kubectl kustomize` (skips when kubectl is missing)."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl not installed: cannot run kubectl kustomize")

    def build(path: Path | str) -> list[dict[str, Any]]:
        out = subprocess.run(
            [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, f"kubectl kustomize {path} failed:\n{out.stderr}"
        return [o for o in yaml.safe_load_all(out.stdout) if o]

    return build


@pytest.fixture(scope="session")
def rendered(kustomize) -> dict[str, list[dict[str, Any]]]:
    """`{kustomization: [objects]}` for every entry of KUSTOMIZATIONS."""
    return {k: kustomize(MANIFESTS / k) for k in KUSTOMIZATIONS}


@pytest.fixture(scope="session")
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """`{(apiVersion, kind): openAPIV3Schema}` from the CRD files of `crd_dir()`."""
    folder = crd_dir()
    paths = crd_files(folder)
    # A missing schema would hide an invalid object, so this fails rather than skips.
    assert paths, (
        f"no CRD files (*.yaml, *.yaml.gz) in {folder}; unset KILN_CRD_SCHEMAS to use {VENDORED_CRDS}"
    )
    schemas = {}
    for path in paths:
        crd = read_crd(path)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def _closed(schema: Any) -> Any:
    """Structural-schema semantics for jsonschema: unknown fields are errors (as kubectl --validate=strict)."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


@pytest.fixture(scope="session")
def validate_crd(crd_schemas):
    """`validate_crd(obj)`: jsonschema-validate a custom resource against its CRD (closed schema)."""
    cache: dict[tuple[str, str], Any] = {}

    def check(obj: dict[str, Any]) -> None:
        key = (obj["apiVersion"], obj["kind"])
        assert key in crd_schemas, f"no CRD schema for {key}"
        if key not in cache:
            schema = _closed(crd_schemas[key])
            schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: checked by the API
            cache[key] = jsonschema.Draft7Validator(schema)
        errors = sorted(cache[key].iter_errors(obj), key=lambda e: list(e.path))
        assert not errors, f"{key[1]}/{obj['metadata'].get('name')}: " + "; ".join(
            f"{'.'.join(map(str, e.path))}: {e.message[:200]}" for e in errors[:5]
        )

    return check


class FakeKube:
    """State of a minimal Kubernetes API server for custom objects."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}  # "plural/ns/name" -> object
        self.deleted: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.rejected: list[str] = []  # validation errors answered with 422
        self.validate = None  # callable(obj) run on every created/replaced object
        self.url = ""


_PATH = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<ver>[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)(/(?P<name>[^/]+))?$"
)


def _handler(state: FakeKube):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):  # keep pytest output clean
            pass

        def _send(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")

        def _status(self, code: int, reason: str) -> None:
            self._send(
                code,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "reason": reason,
                    "code": code,
                },
            )

        def _valid(self, obj: dict[str, Any]) -> bool:
            try:
                if state.validate:
                    state.validate(obj)
                return True
            except AssertionError as e:  # answer like the API server would: 422 Invalid
                state.rejected.append(str(e))
                self._status(422, "Invalid")
                return False

        def do_POST(self):
            state.requests.append(("POST", self.path))
            m = _PATH.match(urlparse(self.path).path)
            obj = self._body()
            key = f"{m['plural']}/{m['ns']}/{obj['metadata']['name']}"
            if key in state.objects:
                return self._status(409, "AlreadyExists")
            if not self._valid(obj):
                return None
            obj["metadata"]["resourceVersion"] = "1"
            state.objects[key] = obj
            self._send(201, obj)

        def do_PUT(self):
            state.requests.append(("PUT", self.path))
            m = _PATH.match(urlparse(self.path).path)
            obj = self._body()
            key = f"{m['plural']}/{m['ns']}/{m['name']}"
            if (
                obj["metadata"].get("resourceVersion")
                != state.objects[key]["metadata"]["resourceVersion"]
            ):
                return self._status(409, "Conflict")
            if not self._valid(obj):
                return None
            obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
            state.objects[key] = obj
            self._send(200, obj)

        def do_GET(self):
            state.requests.append(("GET", self.path))
            m = _PATH.match(urlparse(self.path).path)
            key = f"{m['plural']}/{m['ns']}/{m['name']}"
            if key not in state.objects:
                return self._status(404, "NotFound")
            self._send(200, dict(state.objects[key]))

        def do_DELETE(self):
            state.requests.append(("DELETE", self.path))
            m = _PATH.match(urlparse(self.path).path)
            key = f"{m['plural']}/{m['ns']}/{m['name']}"
            if state.objects.pop(key, None) is None:
                return self._status(404, "NotFound")
            state.deleted.append(key)
            self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

    return Handler


@pytest.fixture
def fake_kube():
    """A fake Kubernetes API on 127.0.0.1 (custom objects), stopped afterwards."""
    state = FakeKube()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
