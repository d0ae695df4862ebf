"""The Kubeflow Model Registry (OpenShift AI's Model Registry), through the official client.

    reg = KubeflowRegistry("https://modelregistry-rest.apps.example.com", author="kiln")
    ids = reg.register("kiln-llama", "3", "s3://kiln/runs/r7/model", metadata={...})
    reg.list_models()                       # [{"name", "versions", "latest", "id"}]
    reg.show("kiln-llama", version="3")     # the shape of `ModelRegistry.show` (MLflow)

A version is keyed by (registered model name, version name): registering one that exists creates
nothing and returns its ids, so a re-run of publish is harmless. The token comes from
$MODEL_REGISTRY_TOKEN, else the pod's service-account token (where the client itself looks). The
`model_registry` package (and its generated REST client, `mr_openapi`) is used through its
public API, imported only here, and only when a registry is configured.
Every failure surfaces as a one-line `UserError` naming the URL; a server that does not answer
(refused, reset, 5xx) is `Unreachable`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kiln.components.common import kube
from kiln.components.common.errors import Unreachable, UserError, check_reachable
from kiln.components.common.storage import is_s3, split_s3
from kiln.components.publish.inference_service import MODEL_FORMAT

TOKEN_ENV = "MODEL_REGISTRY_TOKEN"
CA_ENV = "MODEL_REGISTRY_CA_CERT"  # path to a PEM bundle for a registry behind a private CA
SA_TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"  # where KFP puts the token; the client reads it
API_PATH = "/api/model_registry/v1alpha3"  # what model-registry 0.3.14's client calls
METRICS = ("val_loss", "perplexity", "bits_per_byte")
PAGE_SIZE = 100
ARTIFACT_FIELDS = (
    "model_format_name",
    "model_format_version",
    "storage_key",
    "storage_path",
    "model_source_kind",
    "model_source_class",
    "model_source_group",
    "model_source_id",
    "model_source_name",
)


@dataclass
class KubeflowVersion:
    """Where a version lives in the Kubeflow Model Registry, and whether this call created it."""

    url: str
    registered_model_id: str
    model_version_id: str
    model_artifact_id: str
    created: bool


class KubeflowRegistry:
    """Registered models, versions and model artifacts in the Kubeflow Model Registry at `url`."""

    def __init__(self, url: str, author: str = "kiln", token: str | None = None) -> None:
        self.url = url.rstrip("/")
        check_reachable(self.url, "Kubeflow Model Registry")  # seconds, not a 5-minute timeout
        # One address, token and CA for the client and for `_add_artifact`'s REST client. The
        # port is explicit: without one the client would call http:// URLs at 8080, not 80.
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self._host = self.url if parts.port else f"{self.url}:{port}"
        self._token = token or os.environ.get(TOKEN_ENV) or _service_account_token()
        self._ca = os.environ.get(CA_ENV) or None
        with self._answering("connecting"):
            from model_registry import ModelRegistry

            self.client = ModelRegistry(
                self._host,
                author=author,
                user_token=self._token,
                custom_ca=self._ca,
                log_level=logging.ERROR,  # its port hint misfires on any port but 80/443
            )

    # ---------------------------------------------------------------------------- registration
    def register(
        self,
        name: str,
        version: str,
        uri: str,
        *,
        description: str = "",
        metadata: dict[str, str | float] | None = None,
        storage_key: str = "",
        source: dict[str, str] | None = None,
    ) -> KubeflowVersion:
        """Register `uri` as version `version` of `name` (model format `MODEL_FORMAT`), unless
        that version exists; then complete it if an earlier call stopped before its artifact.

        Args:
            name: registered model name (created on first use, owned by the author).
            version: version name, unique within the model.
            uri: the model's files (s3://bucket/prefix): the artifact's URI, KServe's storageUri.
            description: the version's description.
            metadata: the version's custom properties (str or float values).
            storage_key: data connection name serving reads `uri` with ('' = none).
            source: provenance: model_source_{kind,class,group,id,name} keyword arguments.
        """
        artifact = {
            "model_format_name": MODEL_FORMAT,
            "storage_key": storage_key or None,
            "storage_path": split_s3(uri)[1] if is_s3(uri) else None,
            **(source or {}),
        }
        with self._answering(f"registering {name} version {version}"):
            created = False
            rm = self.client.get_registered_model(name)
            mv = self.client.get_model_version(name, version) if rm else None
            if mv is None:
                self.client.register_model(
                    name,
                    uri,
                    version=version,
                    model_format_version=None,  # vLLM runtimes declare the format unversioned
                    version_description=description or None,
                    metadata=metadata,
                    **artifact,
                )
                created = True
            elif self.client.get_model_artifact(name, version) is None:
                self._add_artifact(str(mv.id), name, uri, artifact)
                created = True
            return self._ids(name, version, created)

    def _add_artifact(self, version_id: str, name: str, uri: str, fields: dict[str, Any]) -> None:
        """Create the model artifact of an existing version (an earlier call stopped before it).

        `register_model` refuses an existing version and `update` only changes existing records,
        so this calls the documented endpoint, POST /model_versions/{id}/artifacts, through the
        REST client generated from the document (`mr_openapi`, public in the same distribution),
        with the body `register_model` sends for the artifact.
        """
        from model_registry.types import ModelArtifact
        from mr_openapi import ApiClient, Configuration, ModelRegistryServiceApi

        secure = urlsplit(self.url).scheme == "https"  # as the client: no CA, no checks on http
        config = Configuration(
            host=self._host,
            access_token=self._token,
            ssl_ca_cert=self._ca if secure else None,
            verify_ssl=secure,
        )
        body = ModelArtifact(name=name, uri=uri, **fields).wrap()

        async def create() -> None:
            async with ApiClient(config) as api:
                await ModelRegistryServiceApi(api).upsert_model_version_artifact(version_id, body)

        self.client.async_runner(create())

    def _ids(self, name: str, version: str, created: bool) -> KubeflowVersion:
        rm = self.client.get_registered_model(name)
        mv = self.client.get_model_version(name, version)
        ma = self.client.get_model_artifact(name, version)
        if rm is None or mv is None or ma is None:
            raise UserError(
                f"Kubeflow Model Registry at {self.url}: {name} version {version} is incomplete "
                "right after registering it (another writer?); re-run publish"
            )
        return KubeflowVersion(self.url, str(rm.id), str(mv.id), str(ma.id), created)

    # ----------------------------------------------------------------------------- read side
    def list_models(self) -> list[dict[str, Any]]:
        """Every registered model: name, id, number of versions, latest version name."""
        out = []
        with self._answering("listing registered models"):
            for rm in self.client.get_registered_models().page_size(PAGE_SIZE):
                names = [mv.name for mv in self._versions(rm.name)]
                out.append(
                    {
                        "name": rm.name,
                        "id": str(rm.id),
                        "versions": len(names),
                        "latest": _latest(names),
                    }
                )
        return sorted(out, key=lambda m: m["name"])

    def show(
        self, name: str, version: str | None = None, alias: str | None = None
    ) -> dict[str, Any]:
        """One version (by name, else the latest) in the shape of MLflow's `ModelRegistry.show`,
        plus `registry`, `url` and `kubeflow` (ids, format, storage key, provenance).

        Raises:
            ValueError: an alias (this registry has none), or an unknown model or version.
        """
        if alias:
            raise ValueError(
                f"the Kubeflow Model Registry has no aliases such as {alias!r}: name a --version"
            )
        with self._answering(f"reading {name}"):
            rm = self.client.get_registered_model(name)
            if rm is None:
                raise ValueError(f"no registered model named {name!r} in {self.url}")
            if version is None:
                version = _latest([mv.name for mv in self._versions(name)])
            mv = self.client.get_model_version(name, str(version)) if version else None
            if mv is None:
                raise ValueError(f"model {name!r} has no version {version} in {self.url}")
            ma = self.client.get_model_artifact(name, mv.name)
        props = dict(mv.custom_properties or {})
        metrics = {k: float(props.pop(k)) for k in METRICS if k in props}
        ids = {"registered_model_id": str(mv.registered_model_id), "model_version_id": str(mv.id)}
        if ma is not None:
            ids["model_artifact_id"] = str(ma.id)
        fields = {k: getattr(ma, k, None) for k in ARTIFACT_FIELDS}
        return {
            "registry": "kubeflow",
            "url": self.url,
            "name": name,
            "version": mv.name,
            "aliases": [],
            "source": (ma.uri if ma is not None else "") or "",
            "description": mv.description or "",
            "mlflow_run_id": str(props.get("mlflow_run_id", "")),
            "model_id": str(props.get("mlflow_model_id", "")),
            "metrics": metrics,
            "run_metrics": {},
            "tags": {k: str(v) for k, v in props.items()},
            "kubeflow": {
                **ids,
                "author": mv.author or "",
                "state": str(getattr(mv.state, "value", mv.state) or ""),
                **{k: str(v) for k, v in fields.items() if v is not None},
            },
        }

    def _versions(self, name: str) -> list[Any]:
        """Every version of model `name`, through the client's pager. After the last page it
        asks once more with an empty `nextPageToken=`, which the upstream server reads as no
        token (the first page again, where the pager stops)."""
        return list(self.client.get_model_versions(name).page_size(PAGE_SIZE))

    # -------------------------------------------------------------------------------- errors
    @contextlib.contextmanager
    def _answering(self, doing: str) -> Iterator[None]:
        """Turn the client's errors into one line naming this registry and what failed."""
        import aiohttp
        from model_registry.exceptions import StoreError
        from mr_openapi import exceptions as api

        where = f"Kubeflow Model Registry at {self.url}"
        try:
            yield
        except aiohttp.ClientConnectorCertificateError as e:  # also a ValueError: first
            raise UserError(
                f"{where}: its TLS certificate is not trusted while {doing} ({e.certificate_error});"
                f" set {CA_ENV} to the CA bundle (PEM) that signed it"
            ) from None
        except (UserError, ValueError):
            raise
        except (api.UnauthorizedException, api.ForbiddenException) as e:
            raise UserError(
                f"{where} refused the request ({e.status} {e.reason}) while {doing}: set "
                f"{TOKEN_ENV} to a token that may use it (e.g. `oc whoami -t`)"
            ) from None
        except api.NotFoundException as e:
            raise UserError(
                f"{where} answered 404 for {API_PATH}/… while {doing}: is it a Model Registry "
                f"REST endpoint that serves the {API_PATH} API? ({e.reason})"
            ) from None
        except (api.ServiceException, aiohttp.ClientError, OSError) as e:
            raise Unreachable(f"{where} does not answer ({_reason(e)}) while {doing}") from None
        except (api.ApiException, StoreError) as e:
            raise UserError(f"{where}: {doing} failed: {_reason(e)}") from None


def _latest(names: list[str]) -> str | None:
    """The newest version name: the highest number (MLflow versions), else the last listed."""
    if not names:
        return None
    numeric = [n for n in names if n.isdigit()]
    return max(numeric, key=int) if numeric else names[-1]


def _reason(e: BaseException) -> str:
    """One short line: an API error's status, reason and body; else the exception's text."""
    body = getattr(e, "body", None)
    if getattr(e, "status", None) is not None:
        text = f"{e.status} {e.reason}" + (f": {body}" if body else "")
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())[:300]


def _service_account_token() -> str | None:
    """The pod's token, where the client looks by default: the file $KF_PIPELINES_SA_TOKEN_PATH
    names, else the service-account mount; None outside a cluster."""
    if path := os.environ.get(SA_TOKEN_PATH_ENV):
        return Path(path).read_text().strip() if Path(path).is_file() else None
    return kube.service_account_file("token") or None
