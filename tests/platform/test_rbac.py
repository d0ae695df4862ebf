"""RBAC is least-privilege: namespaced, no wildcards, one named Secret, and enough for the code."""

from __future__ import annotations

import pytest

from kiln.components.common.kube import DATA_CONNECTION_SECRET

from .conftest import KUSTOMIZATIONS


def _rules(objs):
    return [r for o in objs if o["kind"] in ("Role", "ClusterRole") for r in o["rules"]]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_no_wildcards_no_cluster_roles_no_secret_listing(rendered, kustomization):
    objs = rendered[kustomization]
    assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    for rule in _rules(objs):
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert "*" not in rule.get(field, []), rule
            assert not any("*" in v for v in rule.get(field, []) if v), rule
        if "secrets" in rule["resources"]:
            assert rule["resources"] == ["secrets"], "secrets get a rule of their own"
            assert rule.get("resourceNames") == [DATA_CONNECTION_SECRET], rule
            assert set(rule["verbs"]) == {"get"}, "list/watch ignore resourceNames: get only"
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
        assert not {"roles", "rolebindings", "serviceaccounts/token", "pods/exec"} & set(
            rule["resources"]
        )


def _allowed(rules, group, resource, verb):
    return any(
        group in r["apiGroups"]
        and resource in r["resources"]
        and verb in r["verbs"]
        and "resourceNames" not in r
        for r in rules
    )


def test_role_covers_what_the_code_does(rendered):
    rules = _rules(rendered["overlays/kubeflow"])
    # components/publish/inference_service.apply_inference_service
    for verb in ("create", "get", "update"):
        assert _allowed(rules, "serving.kserve.io", "inferenceservices", verb)


@pytest.mark.parametrize(
    "overlay, runner",
    [("overlays/openshift", "pipeline-runner-dspa"), ("overlays/kubeflow", "default-editor")],
)
def test_pipeline_runner_is_bound(rendered, overlay, runner):
    bindings = [o for o in rendered[overlay] if o["kind"] == "RoleBinding"]
    subjects = {
        s["name"]
        for b in bindings
        for s in b["subjects"]
        if b["roleRef"]["name"] == "kiln-pipeline"
    }
    assert subjects == {"kiln-pipeline", runner}


def test_workload_pods_get_no_api_token(rendered):
    from kiln.components.common.pod_security import pod_specs

    objs = rendered["overlays/dev"]
    for obj in objs:
        if obj["kind"] == "ServingRuntime":  # no such field there: its ServiceAccount says it
            continue
        for where, spec in pod_specs(obj):
            assert spec.get("automountServiceAccountToken") is False, where
    accounts = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ServiceAccount"}
    assert accounts["kiln-model-server"]["automountServiceAccountToken"] is False
    assert accounts["kiln-workload"]["automountServiceAccountToken"] is False
