"""RayJob bodies validate against the KubeRay CRD; run_rayjob drives the real kubernetes client
against a local fake API server (create, status, submitter logs, failure, timeout, cleanup)."""

from __future__ import annotations

import shlex

import pytest

from kiln.components.common import kube
from kiln.components.common.images import RAY_VERSION
from kiln.components.common.pod_security import check_object
from kiln.components.pretrain.rayjob import RayJobFailed, RayJobResources, render_rayjob, run_rayjob

ARGS = [
    "--tokens",
    "s3://bucket/tokens",
    "--output",
    "s3://bucket/runs/r1",
    "--set",
    "train.max_steps=50",
]


@pytest.mark.parametrize(
    "res",
    [
        RayJobResources(),
        RayJobResources(workers=4, gpus_per_worker=8, node_selector={"gpu": "h100"}),
        RayJobResources(workers=2, gpus_per_worker=0, tolerations=[]),
    ],
)
def test_body_validates_and_is_restricted(validate_crd, res):
    body = render_rayjob(
        "kiln-train-r1",
        ARGS,
        resources=res,
        namespace="team-a",
        image="quay.io/kiln/kiln-gpu:0.1.0",
    )
    validate_crd(body)
    assert check_object(body, openshift=True) == []
    spec = body["spec"]
    assert spec["rayClusterSpec"]["rayVersion"] == RAY_VERSION
    assert spec["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    assert spec["shutdownAfterJobFinishes"] is True
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["kiln", "train"] and argv[2 : 2 + len(ARGS)] == ARGS
    assert argv[argv.index("--workers") + 1] == str(res.workers * max(res.gpus_per_worker, 1))
    assert ("--gpu" in argv) == bool(res.gpus_per_worker)
    group = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    assert group["replicas"] == res.workers
    worker = group["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"].get("nvidia.com/gpu") == (
        str(res.gpus_per_worker) if res.gpus_per_worker else None
    )
    assert worker["envFrom"] == [{"secretRef": {"name": kube.DATA_CONNECTION_SECRET}}]
    assert body["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == kube.KUEUE_QUEUE


def test_namespace_from_service_account(tmp_path, monkeypatch):
    (tmp_path / "namespace").write_text("project-x\n")
    monkeypatch.setattr(kube, "SERVICE_ACCOUNT_DIR", tmp_path)
    assert (
        render_rayjob("kiln-train", ARGS, image="r.example/k:1")["metadata"]["namespace"]
        == "project-x"
    )
    (tmp_path / "namespace").write_text("Bad_NS")
    with pytest.raises(ValueError, match="namespace"):
        kube.current_namespace()


def test_default_image_comes_from_images_module(monkeypatch):
    monkeypatch.setenv("KILN_IMAGE_GPU", "registry.example/me/gpu:7")
    body = render_rayjob("kiln-train", ARGS, namespace="ns")
    images = {
        c["image"]
        for s in (
            body["spec"]["submitterPodTemplate"],
            body["spec"]["rayClusterSpec"]["headGroupSpec"]["template"],
        )
        for c in s["spec"]["containers"]
    }
    assert images == {"registry.example/me/gpu:7"}


@pytest.mark.parametrize(
    "name, res, match",
    [
        ("Kiln_Train", None, "RayJob name"),
        ("k" * 48, None, "at most 47"),
        ("kiln", RayJobResources(workers=0), "workers >= 1"),
    ],
)
def test_bad_input(name, res, match):
    with pytest.raises(ValueError, match=match):
        render_rayjob(name, ARGS, resources=res, namespace="ns", image="r.example/k:1")


def _run(fake_kube, validate_crd, statuses, logs, out, **kw):
    """Script the fake API's RayJob statuses and submitter log, then run_rayjob against it."""
    fake_kube.validate = validate_crd
    fake_kube.statuses = statuses
    fake_kube.log_chunks = logs
    body = render_rayjob(
        "kiln-train-r1", ARGS, namespace="team-a", image="quay.io/kiln/kiln-gpu:0.1.0"
    )
    return run_rayjob(
        body, api_client=kube.api_client(fake_kube.url), poll_s=0.01, echo=out.append, **kw
    )


def test_run_succeeds_streams_logs_and_cleans_up(fake_kube, validate_crd):
    statuses = [
        {},
        {"jobDeploymentStatus": "Initializing"},
        {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
        {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
        {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"},
    ]
    out: list[str] = []
    status = _run(
        fake_kube, validate_crd, statuses, ["step 1 loss 9.1\n", "step 2 loss 8.7\n", "done\n"], out
    )
    assert status["jobStatus"] == "SUCCEEDED"
    assert fake_kube.rejected == []
    assert fake_kube.deleted == ["rayjobs/team-a/kiln-train-r1"]
    assert [ln for ln in out if ln.startswith("step")] == ["step 1 loss 9.1", "step 2 loss 8.7"]
    assert any("deployment=Running job=RUNNING" in ln for ln in out)
    assert (
        "GET",
        "/api/v1/namespaces/team-a/pods?labelSelector=job-name%3Dkiln-train-r1",
    ) in fake_kube.requests


def test_failure_is_propagated_and_cleaned_up(fake_kube, validate_crd):
    statuses = [
        {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
        {
            "jobDeploymentStatus": "Failed",
            "jobStatus": "FAILED",
            "reason": "AppFailed",
            "message": "Job entrypoint command failed with exit code 1",
        },
    ]
    out: list[str] = []
    with pytest.raises(RayJobFailed, match="AppFailed Job entrypoint command failed"):
        _run(fake_kube, validate_crd, statuses, ["Traceback: boom\n"], out)
    assert "Traceback: boom" in out
    assert fake_kube.deleted == ["rayjobs/team-a/kiln-train-r1"]


def test_timeout_still_cleans_up(fake_kube, validate_crd):
    with pytest.raises(TimeoutError, match="still"):
        _run(
            fake_kube,
            validate_crd,
            [{"jobDeploymentStatus": "Initializing"}],
            [],
            [],
            timeout_s=0.05,
        )
    assert fake_kube.deleted == ["rayjobs/team-a/kiln-train-r1"]


def test_invalid_body_is_refused_by_the_server(fake_kube, validate_crd):
    from kubernetes.client.exceptions import ApiException

    fake_kube.validate = validate_crd
    body = render_rayjob(
        "kiln-train-r1", ARGS, namespace="team-a", image="quay.io/kiln/kiln-gpu:0.1.0"
    )
    body["spec"]["shutdownAfterJobFinishes"] = "yes"
    with pytest.raises(ApiException) as e:
        run_rayjob(
            body, api_client=kube.api_client(fake_kube.url), poll_s=0.01, echo=lambda s: None
        )
    assert e.value.status == 422 and "shutdownAfterJobFinishes" in fake_kube.rejected[0]


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
