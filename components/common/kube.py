"""Small Kubernetes helpers used by `kiln deploy` (InferenceServices).

The `kubernetes` client is imported lazily, so rendering manifests (and every unit test that only
renders) needs nothing but the standard library. Inside a pod the namespace and credentials come
from the mounted service account; outside, from the current kubeconfig context.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# Default names of what manifests/base creates; keep in step with it.
DATA_CONNECTION_SECRET = "kiln-data-connection"
MODEL_SERVER_SERVICE_ACCOUNT = "kiln-model-server"
LOCAL_QUEUE = "kiln-queue"  # base/kueue-localqueue.yaml
# Kueue admits a workload into the LocalQueue this label names; without it, Kueue ignores it.
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def service_account_file(name: str, sa_dir: Path | None = None) -> str:
    """A file of this pod's service account mount (`token`, `namespace`), stripped; '' outside
    a pod.

    Args:
        name: the file in the mount.
        sa_dir: the service account mount (default SERVICE_ACCOUNT_DIR).
    """
    try:
        return ((sa_dir or SERVICE_ACCOUNT_DIR) / name).read_text().strip()
    except OSError:
        return ""


def current_namespace(default: str = "default", sa_dir: Path | None = None) -> str:
    """The namespace this pod runs in (its service account's), else the kubeconfig's, else `default`.

    Args:
        default: returned when neither the service account file nor a kubeconfig context says.
        sa_dir: the service account mount (default SERVICE_ACCOUNT_DIR).
    """
    if ns := service_account_file("namespace", sa_dir):
        where = f"{(sa_dir or SERVICE_ACCOUNT_DIR) / 'namespace'}"
        return dns_label(ns, where, max_len=63, dns1035=False)
    try:  # outside a cluster: the active kubeconfig context's namespace, if the client is installed
        from kubernetes import config

        # KUBECONFIG is read here, not when the client was imported.
        _, context = config.list_kube_config_contexts(os.environ.get("KUBECONFIG") or None)
        return (context or {}).get("context", {}).get("namespace") or default
    except Exception:  # no kubeconfig, no context, or no client: fall back
        return default


def dns_label(value: str, what: str, max_len: int = 63, dns1035: bool = True) -> str:
    """Check a Kubernetes object name (DNS-1035 label by default) and return it.

    Raises:
        ValueError: naming `what` and the rule it breaks.
    """
    pattern = _DNS1035 if dns1035 else _DNS1123
    if not value or len(value) > max_len or not pattern.match(value):
        rule = "start with a letter" if dns1035 else "start with a letter or digit"
        raise ValueError(
            f"{what}: {value!r} is not a valid name (lowercase letters, digits and '-', "
            f"{rule}, end alphanumeric, at most {max_len} characters)"
        )
    return value


def queue_labels(queue_name: str, what: str = "queue name") -> dict[str, str]:
    """The labels that put a workload into the Kueue LocalQueue `queue_name`; none for ''.

    Raises:
        ValueError: a name that cannot be both a LocalQueue name and a label value.
    """
    if not queue_name:
        return {}
    return {QUEUE_LABEL: dns_label(queue_name, what, dns1035=False)}


def api_client(host: str | None = None) -> Any:
    """A `kubernetes.client.ApiClient`: in-cluster config in a pod, else the kubeconfig.

    Args:
        host: talk to this API server URL without credentials instead (tests, `kubectl proxy`).
    """
    from kubernetes import client, config

    if host:
        cfg = client.Configuration()
        cfg.host = host
        return client.ApiClient(cfg)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(os.environ.get("KUBECONFIG") or None)  # read at call time
    return client.ApiClient()


def restricted_security_context() -> dict[str, Any]:
    """Container securityContext that meets Pod Security "restricted" (and OpenShift restricted-v2)."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
