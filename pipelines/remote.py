"""Talk to a Kubeflow Pipelines / OpenShift AI Data Science Pipelines API server (KFP v2 REST).

    client = connect("https://ds-pipeline-dspa-myproject.apps.example.com", token=None)
    run = submit(client, SubmitRequest("s3://corpus/raw/", RunParams(preset="small")))
    print(run.run_id, run.link)

Authentication: a bearer token (`--token`, else $KFP_TOKEN, else the token of the current
kube config context, i.e. what `oc login` stored, else the pod's service-account token, e.g. in
an OpenShift AI workbench), sent as `Authorization: Bearer …`. On OpenShift AI the host is the
DSP API route (`oc get route ds-pipeline-dspa -o jsonpath=…`).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.components.common.config import RunParams
from kiln.components.common.errors import Unreachable, UserError
from kiln.components.common.kube import service_account_file
from kiln.pipelines.options import PipelineOptions

TOKEN_ENV = "KFP_TOKEN"
# A KFP v2beta1 run in one of these states will not change again.
FINAL_STATES = frozenset({"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"})


def kubeconfig_token(context: str | None = None) -> str:
    """The bearer token of a kube config context ('' when there is none, e.g. cert auth)."""
    try:
        from kubernetes import client, config
    except ImportError:
        return ""
    cfg = client.Configuration()
    try:
        # KUBECONFIG read now: the kubernetes package fixes its default path at import time
        path = os.environ.get("KUBECONFIG") or None
        config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
    except Exception:  # no kube config, or no such context: not an error, just no token
        return ""
    auth = cfg.api_key.get("authorization", "") or ""
    return auth.removeprefix("Bearer ").strip()


def serviceaccount_token(sa_dir: Path | None = None) -> str:
    """The token of the pod's service account ('' outside a pod). In an OpenShift AI workbench
    that is the notebook's account, which the notebook controller binds to the Data Science
    Pipelines user-access Role of the project's `dspa` (RoleBinding `elyra-pipelines-<name>`)."""
    return service_account_file("token", sa_dir)


def connect(
    host: str, token: str | None = None, namespace: str | None = None, verify_ssl: bool = True
) -> Any:
    """A `kfp.Client` for `host`, authenticated with a bearer token (see module docstring).

    Raises:
        ValueError: `host` is empty.
        Unreachable: nothing answers at `host` (in seconds; kfp.Client would retry for minutes).
    """
    if not host:
        raise ValueError("--host is required: the KFP / Data Science Pipelines API URL")
    token = token or os.environ.get(TOKEN_ENV) or kubeconfig_token() or serviceaccount_token()
    token = token or None
    _check_auth(host, token, verify_ssl)
    import kfp

    kwargs: dict[str, Any] = {"host": host, "existing_token": token, "verify_ssl": verify_ssl}
    if namespace:
        kwargs["namespace"] = namespace
    return kfp.Client(**kwargs)


def _check_auth(host: str, token: str | None, verify_ssl: bool, timeout_s: float = 8.0) -> None:
    """Fail fast with a clear message when nothing answers at `host` or the server refuses the
    token (kfp.Client would retry its health check for half a minute, then report a timeout)."""
    import ssl
    import urllib.error
    import urllib.request

    url = f"{host.rstrip('/')}/apis/v2beta1/healthz"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    context = None if verify_ssl else ssl._create_unverified_context()
    try:
        urllib.request.urlopen(req, timeout=timeout_s, context=context).close()
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            how = "the token was refused" if token else "no token was given (--token or $KFP_TOKEN)"
            raise ValueError(
                f"{host}: HTTP {e.code}, {how}; `oc whoami -t` prints a valid one"
            ) from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, ssl.SSLError):
            raise UserError(
                f"{host}: TLS failed ({e.reason}); for a self-signed test cluster pass --insecure"
            ) from None
        reason = getattr(e.reason, "strerror", None) or str(e.reason)
        raise Unreachable(f"the KFP API server at {host} does not answer ({reason})") from None
    except TimeoutError:
        raise Unreachable(
            f"the KFP API server at {host} does not answer (no reply in {timeout_s:g}s)"
        ) from None


@dataclass
class SubmitRequest:
    """One run to create: pipeline parameters, where to file it, how to compile it."""

    corpus_uri: str
    params: RunParams = field(default_factory=RunParams)
    baseline_model: str = ""
    experiment: str = "kiln"
    run_name: str = ""
    upload_as: str = ""  # also upload the pipeline under this name (a new version if it exists)
    options: PipelineOptions = field(default_factory=PipelineOptions)
    pipeline: str = "pretrain"  # or "sft" (corpus_uri: conversations; sft.base in the overrides)

    def arguments(self) -> dict[str, Any]:
        """The pipeline's run parameters."""
        args = {"corpus_uri": self.corpus_uri, **self.params.pipeline_arguments()}
        if self.pipeline == "pretrain":
            args["baseline_model"] = self.baseline_model
        return args

    def compile(self, path: str) -> tuple[str, str]:
        """Compile the chosen pipeline to `path`; returns (path, pipeline name)."""
        if self.pipeline == "sft":
            from kiln.pipelines.sft import SFT_PIPELINE_NAME, compile_sft_pipeline

            return compile_sft_pipeline(path, self.options), SFT_PIPELINE_NAME
        from kiln.pipelines.pretrain import PIPELINE_NAME, compile_pipeline

        return compile_pipeline(path, self.options), PIPELINE_NAME


@dataclass
class Submitted:
    run_id: str
    link: str
    experiment_id: str
    pipeline_id: str = ""


def run_link(client: Any, run_id: str) -> str:
    """The UI link of a run (KFP UI host when known, else the API host)."""
    base = getattr(client, "_uihost", "") or client._run_api.api_client.configuration.host
    return f"{base.rstrip('/')}/#/runs/details/{run_id}"


def submit(client: Any, req: SubmitRequest) -> Submitted:
    """Compile the pipeline, (optionally) upload it, and create a run; returns its id and link."""
    if not req.corpus_uri:
        raise ValueError("--data is required on a cluster: an s3://bucket/prefix or hf:// corpus")
    experiment = client.create_experiment(name=req.experiment)  # returns it when it exists
    with tempfile.TemporaryDirectory(prefix="kiln-submit-") as tmp:
        package, name = req.compile(str(Path(tmp) / "pipeline.yaml"))
        run_name = req.run_name or f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        pipeline_id = version_id = None
        if req.upload_as:
            pipeline_id = client.get_pipeline_id(req.upload_as)
            if pipeline_id is None:
                pipeline = client.upload_pipeline(package, pipeline_name=req.upload_as)
                pipeline_id = pipeline.pipeline_id
                versions = client.list_pipeline_versions(pipeline_id).pipeline_versions or []
                version_id = versions[0].pipeline_version_id if versions else None
            else:
                version = client.upload_pipeline_version(
                    package, pipeline_version_name=run_name, pipeline_id=pipeline_id
                )
                version_id = version.pipeline_version_id
        run = client.run_pipeline(
            experiment_id=experiment.experiment_id,
            job_name=run_name,
            pipeline_package_path=None if pipeline_id else package,
            params=req.arguments(),
            pipeline_id=pipeline_id,
            version_id=version_id,
        )
    return Submitted(
        run.run_id, run_link(client, run.run_id), experiment.experiment_id, pipeline_id or ""
    )


def list_runs(client: Any, experiment: str = "", limit: int = 20) -> list[dict[str, Any]]:
    """The newest runs (optionally of one experiment) as plain dicts."""
    experiment_id = None
    if experiment:
        experiment_id = client.get_experiment(experiment_name=experiment).experiment_id
    resp = client.list_runs(page_size=limit, sort_by="created_at desc", experiment_id=experiment_id)
    return [run_summary(r) for r in (resp.runs or [])]


def wait_for_run(
    client: Any,
    run_id: str,
    poll_s: float = 15.0,
    timeout_s: float | None = None,
    echo: Callable[[str], Any] | None = print,
) -> dict[str, Any]:
    """Poll a run until it ends (SUCCEEDED, SKIPPED, FAILED or CANCELED); returns its summary.

    Args:
        client: a `kfp.Client` (see `connect`).
        run_id: the id `submit` returned.
        poll_s: seconds between two polls.
        timeout_s: give up after this many seconds (None = wait as long as it runs).
        echo: called with one line per state change (`[  75s] RUNNING`); None = silent.

    Raises:
        TimeoutError: the run is still going after `timeout_s`; it keeps running on the server.
    """
    start, last = time.monotonic(), None
    while True:
        info = run_summary(client.get_run(run_id))
        elapsed = time.monotonic() - start
        if echo and info["state"] != last:
            echo(f"[{elapsed:5.0f}s] {info['state'] or 'PENDING'}")
            last = info["state"]
        if info["state"] in FINAL_STATES:
            return info
        if timeout_s is not None and elapsed + poll_s > timeout_s:
            raise TimeoutError(
                f"run {run_id} is still {info['state']} after {elapsed:.0f}s; it keeps running on "
                f"the server (`kiln runs get {run_id}`)"
            )
        time.sleep(poll_s)


def run_summary(run: Any) -> dict[str, Any]:
    """The fields of a v2beta1 run worth printing."""
    error = getattr(run, "error", None)
    return {
        "run_id": run.run_id,
        "name": run.display_name,
        "state": run.state or "",
        "created": str(run.created_at or ""),
        "finished": str(run.finished_at or ""),
        "error": getattr(error, "message", "") if error else "",
    }
