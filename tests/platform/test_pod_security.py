"""Pod Security "restricted" holds for every pod template Kiln ships; the checker catches violations."""

from __future__ import annotations

import copy

import pytest

from kiln.components.common.pod_security import check_object, check_pod_spec, pod_specs

from .conftest import KUSTOMIZATIONS

GOOD = {
    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [
        {
            "name": "main",
            "image": "quay.io/kiln/kiln-cpu:0.1.0",
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
        }
    ],
    "volumes": [{"name": "tmp", "emptyDir": {}}],
}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_rendered_manifests_are_restricted(rendered, kustomization):
    openshift = kustomization == "overlays/openshift"
    found = 0
    for obj in rendered[kustomization]:
        found += len(list(pod_specs(obj)))
        assert check_object(obj, openshift=openshift) == []
    if kustomization.startswith("overlays/"):
        # MLflow, Ray head, Ray workers, vLLM runtime (+ MinIO and its bucket job in dev)
        assert found >= (6 if kustomization == "overlays/dev" else 4)


def test_good_spec_passes():
    assert check_pod_spec(GOOD) == []
    assert check_pod_spec(GOOD, openshift=True) == []


def _set(path: str, value):
    spec = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = spec
    for key in parents:
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    if value is None:
        node.pop(last)
    else:
        node[last] = value
    return spec


@pytest.mark.parametrize(
    "path, value, expect",
    [
        ("hostNetwork", True, "hostNetwork"),
        ("hostPID", True, "hostPID"),
        ("volumes", [{"name": "h", "hostPath": {"path": "/"}}], "hostPath"),
        ("securityContext.runAsNonRoot", None, "runAsNonRoot"),
        ("securityContext.runAsUser", 0, "runAsUser must not be 0"),
        ("securityContext.seccompProfile", {"type": "Unconfined"}, "seccompProfile"),
        ("securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}], "sysctl"),
        ("containers.0.securityContext.allowPrivilegeEscalation", None, "allowPrivilegeEscalation"),
        ("containers.0.securityContext.privileged", True, "privileged"),
        (
            "containers.0.securityContext.capabilities",
            {"drop": ["NET_RAW"]},
            "drop must include ALL",
        ),
        (
            "containers.0.securityContext.capabilities",
            {"drop": ["ALL"], "add": ["SYS_ADMIN"]},
            "SYS_ADMIN",
        ),
        ("containers.0.securityContext.runAsNonRoot", False, "runAsNonRoot"),
        ("containers.0.securityContext.procMount", "Unmasked", "procMount"),
        ("containers.0.ports", [{"containerPort": 80, "hostPort": 80}], "hostPort"),
        ("containers.0.securityContext.seLinuxOptions", {"type": "spc_t"}, "seLinuxOptions"),
        ("initContainers", [{"name": "init", "image": "x:1"}], "initContainers[init]"),
    ],
)
def test_each_violation_is_caught(path, value, expect):
    problems = check_pod_spec(_set(path, value), "pod")
    assert any(expect in p for p in problems), problems


def test_net_bind_service_may_be_added():
    spec = _set(
        "containers.0.securityContext.capabilities", {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    )
    assert check_pod_spec(spec) == []


def test_openshift_rejects_fixed_ids():
    assert check_pod_spec(_set("securityContext.fsGroup", 1001)) == []
    assert any(
        "fsGroup" in p
        for p in check_pod_spec(_set("securityContext.fsGroup", 1001), openshift=True)
    )
    spec = _set("containers.0.securityContext.runAsUser", 1001)
    assert any("runAsUser" in p for p in check_pod_spec(spec, openshift=True))


def test_pod_specs_finds_every_template():
    deploy = {"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": GOOD}}}
    ray = {
        "kind": "RayCluster",
        "metadata": {"name": "r"},
        "spec": {
            "headGroupSpec": {"template": {"spec": GOOD}},
            "workerGroupSpecs": [{"template": {"spec": GOOD}}, {"template": {"spec": GOOD}}],
        },
    }
    isvc = {
        "kind": "InferenceService",
        "metadata": {"name": "i"},
        "spec": {"predictor": {"model": {"runtime": "x"}}},
    }
    assert [w for w, _ in pod_specs(deploy)] == ["Deployment/d.spec.template.spec"]
    assert len(list(pod_specs(ray))) == 3
    # a predictor model container without a securityContext is reported
    assert any("allowPrivilegeEscalation" in p for p in check_object(isvc))
