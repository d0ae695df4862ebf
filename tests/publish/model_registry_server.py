"""A local Kubeflow Model Registry REST server for tests: in memory, every exchange checked
against the vendored OpenAPI document (tests/schemas/model-registry/model-registry.yaml).

    server = ModelRegistryServer(token="t0ken").start()   # 127.0.0.1, a free port
    server.url                       # http://127.0.0.1:PORT, for ModelRegistry(...)/the config
    server.down = True               # every request answers 503 (the registry is "down")
    server.fail_at("POST", r"/model_versions/\\d+/artifacts$")   # down from that request on
    server.count()                   # {"registered_models": 1, "model_versions": 1, ...}
    server.stop(); server.errors     # every request or response that broke the document

It implements only the operations the `model-registry` client calls for Kiln (find, create
and list registered models, versions and model artifacts). Each request is validated with
openapi-core (path, query, headers, security, body) before it is served: an invalid one is
answered 400 and recorded; each response is validated before it is sent, and recorded when
invalid. The bearer token must match. The document is used as published (only its example
`servers` give way to this server's address): the pinned client, model-registry 0.3.14, calls
the API it describes, /api/model_registry/v1alpha3/. One deviation is let through: an empty
`nextPageToken` (see `TOLERATED_EMPTY`).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

DOCUMENT = Path(__file__).parents[1] / "schemas" / "model-registry" / "model-registry.yaml"
API_PREFIX = "/api/model_registry/v1alpha3"
KINDS = ("registered_models", "model_versions", "model_artifacts")
# The client's `Pager` (model_registry/types/pager.py) asks once more after the last page, with
# the '' token that page returned: `nextPageToken=`. The document does not allow an empty value
# (no `allowEmptyValue`), but the upstream Go server reads it as no token (buildListOption in
# internal/server/openapi/api_model_registry_service_service.go, kubeflow/model-registry
# bd07139a6, the snapshot the document comes from), and so does `_page`. Only this is let through.
TOLERATED_EMPTY = "nextPageToken"


def load_document(url: str) -> OpenAPI:
    """The vendored document as published, served from `url` (its `servers` are examples)."""
    doc = yaml.safe_load(DOCUMENT.read_text())
    doc["servers"] = [{"url": url}]
    return OpenAPI.from_dict(doc)


class RawRequest:
    """An HTTP request as openapi-core's `Request` protocol reads it, less an empty
    TOLERATED_EMPTY query parameter (listed in `tolerated`)."""

    def __init__(self, host_url: str, method: str, target: str, headers: Any, body: bytes):
        split = urlsplit(target)
        self.host_url, self.path, self.method = host_url, split.path, method.lower()
        self.body = body or None
        self.content_type = (headers.get("Content-Type") or "application/json").lower()
        pairs = parse_qsl(split.query, keep_blank_values=True)
        self.tolerated = [k for k, v in pairs if (k, v) == (TOLERATED_EMPTY, "")]
        query = ImmutableMultiDict([(k, v) for k, v in pairs if (k, v) != (TOLERATED_EMPTY, "")])
        self.parameters = RequestParameters(query=query, header=Headers(dict(headers.items())))


class RawResponse:
    """An HTTP response as openapi-core's `Response` protocol reads it."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status_code, self.data = status, json.dumps(body).encode()
        self.content_type = "application/json"
        self.headers = Headers({"Content-Type": self.content_type})


class ModelRegistryServer(ThreadingHTTPServer):
    """The registry: its objects (camelCase JSON, as the API returns them) and its request log."""

    daemon_threads = True

    def __init__(self, token: str = "test-token") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.openapi = load_document(self.url)
        self.token = token
        self.objects: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in KINDS}
        self.parent: dict[str, str] = {}  # model artifact id → model version id
        self.requests: list[tuple[str, str, int]] = []  # (method, path?query, status)
        self.errors: list[str] = []
        self.tolerated: list[str] = []  # requests that sent an empty TOLERATED_EMPTY
        self.down = False
        self._fail_at: tuple[str, re.Pattern[str]] | None = None
        self._next_id = 0
        self._lock = threading.Lock()

    def start(self) -> ModelRegistryServer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def fail_at(self, method: str, path_pattern: str) -> None:
        """Go down when a `method` request whose path matches `path_pattern` arrives."""
        self._fail_at = (method, re.compile(path_pattern))

    def count(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.objects.items()}

    # ------------------------------------------------------------------------------- the API
    def serve(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        rel = path.removeprefix(API_PREFIX)
        with self._lock:
            for verb, pattern, handler in ROUTES:
                match = re.fullmatch(pattern, rel)
                if verb == method and match:
                    return handler(self, query, body, *match.groups())
        return 404, _error("Not Found", f"no route {method} {path}")

    def new(self, kind: str, body: dict[str, Any], **fields: Any) -> dict[str, Any]:
        self._next_id += 1
        now = str(int(time.time() * 1000))
        obj = {**body, **fields, "id": str(self._next_id)}
        obj.update(createTimeSinceEpoch=now, lastUpdateTimeSinceEpoch=now)
        obj.setdefault("customProperties", {})
        self.objects[kind][obj["id"]] = obj
        return obj

    def find(self, kind: str, parent: str | None = None, **match: str) -> dict[str, Any] | None:
        for obj in self.objects[kind].values():
            mine = parent is None or _parent_id(self, kind, obj) == parent
            if mine and all(obj.get(k) == v for k, v in match.items()):
                return obj
        return None


def _parent_id(server: ModelRegistryServer, kind: str, obj: dict[str, Any]) -> str:
    return obj["registeredModelId"] if kind == "model_versions" else server.parent[obj["id"]]


def _error(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def _page(items: list[dict[str, Any]], query: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """One page as the real server pages: by id, `pageSize` (default: all), an opaque cursor
    token, and '' as the token of the last page."""
    items = sorted(items, key=lambda o: int(o["id"]), reverse=query.get("sortOrder") == "DESC")
    size = int(query.get("pageSize") or 0) or len(items) or 1
    start = int(base64.b64decode(query["nextPageToken"])) if query.get("nextPageToken") else 0
    page, more = items[start : start + size], start + size < len(items)
    token = base64.b64encode(str(start + size).encode()).decode() if more else ""
    return 200, {"items": page, "nextPageToken": token, "pageSize": size, "size": len(page)}


def _find(kind: str):
    def handler(server, query, body):
        obj = server.find(
            kind,
            query.get("parentResourceId"),
            **({"name": query["name"]} if "name" in query else {}),
        )
        return (200, obj) if obj else (404, _error("Not Found", f"no such {kind[:-1]}"))

    return handler


def _create_registered_model(server, query, body):
    if server.find("registered_models", name=body["name"]):
        return 409, _error("Conflict", f"registered model {body['name']!r} exists")
    return 201, server.new("registered_models", body, state=body.get("state", "LIVE"))


def _create_model_version(server, query, body):
    parent = body["registeredModelId"]
    if parent not in server.objects["registered_models"]:
        return 422, _error("Unprocessable Entity", f"no registered model {parent}")
    if server.find("model_versions", parent, name=body["name"]):
        return 409, _error("Conflict", f"version {body['name']!r} exists")
    return 201, server.new("model_versions", body, state=body.get("state", "LIVE"))


def _upsert_version_artifact(server, query, body, version_id):
    if version_id not in server.objects["model_versions"]:
        return 404, _error("Not Found", f"no model version {version_id}")
    if body.get("artifactType") != "model-artifact" or "id" in body:
        return 400, _error("Bad Request", "only new model artifacts are implemented here")
    if server.find("model_artifacts", version_id, name=body.get("name")):
        return 409, _error("Conflict", f"artifact {body.get('name')!r} exists")
    obj = server.new("model_artifacts", body, state=body.get("state", "UNKNOWN"))
    server.parent[obj["id"]] = version_id
    return 201, obj


def _list_versions(server, query, body, model_id):
    if model_id not in server.objects["registered_models"]:
        return 404, _error("Not Found", f"no registered model {model_id}")
    versions = server.objects["model_versions"].values()
    return _page([v for v in versions if v["registeredModelId"] == model_id], query)


ROUTES = [
    ("GET", r"/registered_models", lambda s, q, b: _page(list(s.objects["registered_models"].values()), q)),
    ("POST", r"/registered_models", _create_registered_model),
    ("GET", r"/registered_model", _find("registered_models")),
    ("GET", r"/registered_models/(\d+)/versions", _list_versions),
    ("POST", r"/model_versions", _create_model_version),
    ("GET", r"/model_version", _find("model_versions")),
    ("POST", r"/model_versions/(\d+)/artifacts", _upsert_version_artifact),
    ("GET", r"/model_artifact", _find("model_artifacts")),
]  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    server: ModelRegistryServer

    def do_GET(self) -> None:
        self._exchange()

    def do_POST(self) -> None:
        self._exchange()

    def do_PATCH(self) -> None:
        self._exchange()

    def log_message(self, *args: Any) -> None:  # keep pytest's output clean
        pass

    def _exchange(self) -> None:
        s = self.server
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = RawRequest(s.url, self.command, self.path, self.headers, raw)
        if request.tolerated:
            s.tolerated.append(f"{self.command} {self.path}")
        fail = s._fail_at
        if fail and self.command == fail[0] and fail[1].search(request.path):
            s.down, s._fail_at = True, None
        if s.down:
            return self._send(request, 503, _error("Service Unavailable", "registry is down"))
        try:
            s.openapi.validate_request(request)
        except Exception as e:  # any way the request breaks the document fails the test
            s.errors.append(f"request {self.command} {self.path}: {_describe(e)}")
            return self._send(request, 400, _error("Bad Request", _describe(e)))
        if self.headers.get("Authorization") != f"Bearer {s.token}":
            return self._send(request, 401, _error("Unauthorized", "bad or missing token"))
        query = dict(request.parameters.query.items())
        status, body = s.serve(self.command, request.path, query, json.loads(raw) if raw else None)
        self._send(request, status, body)

    def _send(self, request: RawRequest, status: int, body: Any) -> None:
        s, response = self.server, RawResponse(status, body)
        try:
            s.openapi.validate_response(request, response)
        except Exception as e:
            s.errors.append(f"response {status} to {self.command} {self.path}: {_describe(e)}")
        s.requests.append((self.command, self.path, status))
        self.send_response(status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.data)))
        self.end_headers()
        self.wfile.write(response.data)


def _describe(e: Exception) -> str:
    """The exception and its causes (openapi-core nests the schema errors)."""
    parts, seen = [], e
    while seen is not None:
        parts.append(f"{type(seen).__name__}: {seen}")
        for sub in getattr(seen, "schema_errors", []) or []:
            parts.append(f"  {sub.message} at {list(sub.absolute_path)}")
        seen = seen.__cause__
    return " <- ".join(parts)
