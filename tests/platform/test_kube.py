"""The namespace Kiln's Kubernetes objects go to: the pod's service account's, else the kubeconfig's."""

from __future__ import annotations

import pytest

from kiln.components.common import kube


def test_namespace_from_service_account(tmp_path, monkeypatch):
    (tmp_path / "namespace").write_text("project-x\n")
    monkeypatch.setattr(kube, "SERVICE_ACCOUNT_DIR", tmp_path)
    assert kube.current_namespace() == "project-x"
    (tmp_path / "namespace").write_text("Bad_NS")
    with pytest.raises(ValueError, match="namespace"):
        kube.current_namespace()


def test_namespace_from_kubeconfig_outside_a_cluster(tmp_path, monkeypatch):
    monkeypatch.setattr(kube, "SERVICE_ACCOUNT_DIR", tmp_path / "absent")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    assert kube.current_namespace() == "default"
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u, namespace: team-b}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(cfg))
    assert kube.current_namespace() == "team-b"
