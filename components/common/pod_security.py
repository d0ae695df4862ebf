"""Pod Security Standards "restricted" checker for anything that carries a pod spec.

Kubernetes enforces the standard per namespace (`pod-security.kubernetes.io/enforce: restricted`,
OpenShift's restricted-v2 SCC is close to it); this module finds violations before a cluster does,
in rendered manifests, generated RayJobs/InferenceServices and compiled pipeline pod specs:

    for where, spec in pod_specs(obj):          # Deployment, Job, RayCluster, RayJob, ...
        problems += check_pod_spec(spec, where)

`check_pod_spec` covers the baseline and restricted controls of the standard (v1.25+): host
namespaces, privileged, capabilities, hostPath and other non-allowed volume types, host ports,
AppArmor/SELinux/seccomp, /proc mount, sysctls, allowPrivilegeEscalation, runAsNonRoot, runAsUser.
With `openshift=True` it also rejects fixed `runAsUser`/`fsGroup`, which restricted-v2 refuses
outside the project's UID range.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# Volume types "restricted" allows (everything else, hostPath included, is a violation).
ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
_SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def pod_specs(obj: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield `(path, pod_spec)` for every pod spec inside a Kubernetes object.

    A pod spec is any mapping with a `containers` list (Pod, Deployment/Job templates, RayCluster
    head/worker templates, RayJob submitter and cluster specs, KServe ServingRuntime). A KServe
    predictor's `model` container is folded into its predictor's spec.
    """
    if isinstance(obj, dict):
        if not where and "kind" in obj:
            where = f"{obj['kind']}/{obj.get('metadata', {}).get('name', '?')}"
        if isinstance(obj.get("containers"), list):
            yield where, obj
        elif isinstance(obj.get("model"), dict) and where.endswith("predictor"):
            spec = {k: v for k, v in obj.items() if k != "model"}
            spec["containers"] = [{"name": "kserve-container", **obj["model"]}]
            yield where, spec
        for key, value in obj.items():
            if key not in _CONTAINER_LISTS:
                yield from pod_specs(value, f"{where}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from pod_specs(value, f"{where}[{i}]")


def _effective(pod: dict, ctr: dict, key: str) -> Any:
    """A container's security setting, falling back to the pod's (None when neither sets it)."""
    value = (ctr.get("securityContext") or {}).get(key)
    return (pod.get("securityContext") or {}).get(key) if value is None else value


def check_pod_spec(spec: dict[str, Any], where: str = "pod", openshift: bool = False) -> list[str]:
    """Return every Pod Security "restricted" violation in one pod spec (empty list = compliant).

    Args:
        spec: a PodSpec as a plain dict (camelCase keys, as in YAML).
        where: a label for messages, e.g. `Deployment/kiln-mlflow`.
        openshift: also flag fixed runAsUser/fsGroup (OpenShift restricted-v2 assigns them).
    """
    out: list[str] = []
    psc = spec.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            out.append(f"{where}: {key} must be unset or false")
    for vol in spec.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            bad = ", ".join(sorted(kinds - ALLOWED_VOLUMES))
            out.append(f"{where}: volume {vol.get('name')!r} uses {bad} (not allowed)")
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"{where}: sysctl {sysctl.get('name')!r} is not in the safe set")
    if openshift:
        out += [
            f"{where}: fixed {k} (restricted-v2 assigns it)"
            for k in ("runAsUser", "fsGroup")
            if k in psc
        ]
    if psc.get("runAsUser") == 0:
        out.append(f"{where}: securityContext.runAsUser must not be 0")
    out += _check_selinux_apparmor(psc, where)

    for ctr_key in _CONTAINER_LISTS:
        for ctr in spec.get(ctr_key) or []:
            out += _check_container(
                spec, ctr, f"{where}.{ctr_key}[{ctr.get('name', '?')}]", openshift
            )
    return out


def _check_selinux_apparmor(sc: dict, where: str) -> list[str]:
    out = []
    selinux = sc.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in _SELINUX_TYPES:
        out.append(f"{where}: seLinuxOptions.type {selinux['type']!r} is not allowed")
    if selinux.get("user") or selinux.get("role"):
        out.append(f"{where}: seLinuxOptions user/role must be unset")
    if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        out.append(f"{where}: appArmorProfile must not be Unconfined")
    return out


def _check_container(pod: dict, ctr: dict, where: str, openshift: bool) -> list[str]:
    out: list[str] = []
    sc = ctr.get("securityContext") or {}
    if sc.get("privileged"):
        out.append(f"{where}: privileged must be false")
    if sc.get("allowPrivilegeEscalation") is not False:
        out.append(f"{where}: securityContext.allowPrivilegeEscalation must be false")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        out.append(f"{where}: securityContext.capabilities.drop must include ALL")
    extra = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
    if extra:
        out.append(f"{where}: capabilities.add {sorted(extra)} (only NET_BIND_SERVICE allowed)")
    if _effective(pod, ctr, "runAsNonRoot") is not True:
        out.append(f"{where}: runAsNonRoot must be true (container or pod securityContext)")
    if _effective(pod, ctr, "runAsUser") == 0:
        out.append(f"{where}: runAsUser must not be 0")
    if openshift and "runAsUser" in sc:
        out.append(f"{where}: fixed runAsUser (restricted-v2 assigns it)")
    seccomp = (_effective(pod, ctr, "seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        out.append(
            f"{where}: seccompProfile.type must be RuntimeDefault or Localhost, got {seccomp}"
        )
    if sc.get("procMount", "Default") != "Default":
        out.append(f"{where}: procMount must be Default")
    for port in ctr.get("ports") or []:
        if port.get("hostPort"):
            out.append(f"{where}: hostPort {port['hostPort']} is not allowed")
    return out + _check_selinux_apparmor(sc, where)


def check_object(obj: dict[str, Any], openshift: bool = False) -> list[str]:
    """All "restricted" violations in every pod spec of one Kubernetes object."""
    return [p for where, spec in pod_specs(obj) for p in check_pod_spec(spec, where, openshift)]


# What the KFP backend puts in every step's container securityContext on its own (kfp-kubernetes
# `set_security_context` docs: allowPrivilegeEscalation=false, drop ALL, seccomp RuntimeDefault).
# runAsNonRoot is not among them: a pipeline sets it per task with set_security_context.
KFP_BACKEND_DEFAULTS = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
_KFP_VOLUMES = {
    "pvcMount": "persistentVolumeClaim",
    "secretAsVolume": "secret",
    "configMapAsVolume": "configMap",
    "emptyDirMounts": "emptyDir",
    "genericEphemeralVolume": "ephemeral",
}


def kfp_pod_specs(
    docs: list[dict[str, Any]], assume_backend_defaults: bool = True
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield `(executor, pod_spec)` for every step of a compiled KFP pipeline.

    A compiled pipeline (the YAML of `kfp.compiler`, as a list of documents) holds no pod specs:
    the backend builds them from each executor's container and its kfp-kubernetes platform config
    (securityContext, volumes, ...). This rebuilds the parts Pod Security looks at.

    Args:
        docs: `list(yaml.safe_load_all(pipeline_yaml))`.
        assume_backend_defaults: add KFP_BACKEND_DEFAULTS under each step's own securityContext.
    """
    spec = next((d for d in docs if isinstance(d, dict) and "deploymentSpec" in d), None)
    if spec is None:
        raise ValueError("not a compiled KFP pipeline: no document has a deploymentSpec")
    platform = next((d for d in docs if isinstance(d, dict) and "platforms" in d), {})
    configs = platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {})
    configs = configs.get("executors", {})
    for name, executor in spec["deploymentSpec"]["executors"].items():
        config = configs.get(name, {})
        sc = dict(KFP_BACKEND_DEFAULTS) if assume_backend_defaults else {}
        sc.update(config.get("securityContext") or {})
        image = executor.get("container", {}).get("image", "")
        volumes = [
            {"name": f"{key}-{i}", kind: {}}
            for key, kind in _KFP_VOLUMES.items()
            for i, _ in enumerate(config.get(key) or [])
        ]
        pod = {"containers": [{"name": "main", "image": image, "securityContext": sc}]}
        if volumes:
            pod["volumes"] = volumes
        yield name, pod


def check_kfp_pipeline(
    docs: list[dict[str, Any]], openshift: bool = False, assume_backend_defaults: bool = True
) -> list[str]:
    """All "restricted" violations of a compiled KFP pipeline's steps (see `kfp_pod_specs`)."""
    return [
        p
        for name, pod in kfp_pod_specs(docs, assume_backend_defaults)
        for p in check_pod_spec(pod, f"executor {name}", openshift)
    ]
