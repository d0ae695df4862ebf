"""Every kustomization builds and every rendered object validates against its schema."""

from __future__ import annotations

import shutil

import kubernetes_validate
import pytest
import yaml

from kiln.components.common.images import DEFAULT_REGISTRY, RAY_VERSION, validate_ref

from .conftest import KUSTOMIZATIONS, MANIFESTS

K8S_VERSION = kubernetes_validate.latest_version()
CLUSTER_SCOPED = {
    "ResourceFlavor",
    "ClusterQueue",
    "ClusterRole",
    "ClusterRoleBinding",
    "Namespace",
}


def _core_validate(obj: dict) -> bool:
    """Validate with kubernetes-validate (strict: unknown fields fail); False when it has no schema."""
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return False
    except kubernetes_validate.ValidationError as e:
        pytest.fail(
            f"{obj['kind']}/{obj['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}"
        )
    return True


def _imagestream_validate(obj: dict) -> None:
    """OpenShift ImageStream (no schema here): the fields image import and the dashboard read."""
    assert obj["apiVersion"] == "image.openshift.io/v1", obj
    tags = obj["spec"]["tags"]
    assert tags and set(obj["spec"]) <= {"lookupPolicy", "tags", "dockerImageRepository"}, obj
    for tag in tags:
        assert tag["name"] and set(tag) <= {
            "name", "annotations", "from", "reference", "generation", "importPolicy",
            "referencePolicy",
        }, tag  # fmt: skip
        assert tag["from"]["kind"] in {"DockerImage", "ImageStreamTag", "ImageStreamImage"}, tag
        assert tag["from"]["name"] and tag["referencePolicy"]["type"] in {"Source", "Local"}, tag
        assert all(isinstance(v, str) for v in tag.get("annotations", {}).values()), tag


def _route_validate(obj: dict) -> None:
    """OpenShift Route (no CRD schema here): the fields the router needs, TLS on."""
    spec = obj["spec"]
    assert spec["to"]["kind"] == "Service" and spec["to"]["name"], obj
    assert spec["tls"]["termination"] in {"edge", "reencrypt", "passthrough"}, obj
    assert spec["tls"].get("insecureEdgeTerminationPolicy") in {"Redirect", "None"}, obj


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_object_validates(rendered, validate_crd, kustomization):
    objects = rendered[kustomization]
    assert objects, f"{kustomization} rendered nothing"
    seen = set()
    for obj in objects:
        key = (obj["kind"], obj["metadata"]["name"])
        assert key not in seen, f"{kustomization}: duplicate {key}"
        seen.add(key)
        if obj["kind"] == "Route":
            _route_validate(obj)
        elif obj["kind"] == "ImageStream":
            _imagestream_validate(obj)
        elif not _core_validate(obj):
            validate_crd(obj)  # fails when neither a core nor a CRD schema is known


def test_validators_reject_bad_objects(rendered, validate_crd):
    deploy = next(o for o in rendered["overlays/dev"] if o["kind"] == "Deployment")
    bad = yaml.safe_load(yaml.safe_dump(deploy))
    bad["spec"]["template"]["spec"]["containers"][0]["imagee"] = "typo"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    ray = next(o for o in rendered["overlays/dev"] if o["kind"] == "RayCluster")
    bad = yaml.safe_load(yaml.safe_dump(ray))
    bad["spec"]["workerGroupSpecs"][0]["replicas"] = "two"
    with pytest.raises(AssertionError, match="replicas"):
        validate_crd(bad)
    bad = yaml.safe_load(yaml.safe_dump(ray))
    bad["spec"]["headGroupSpec"]["rayStartParamz"] = {}
    with pytest.raises(AssertionError, match="rayStartParamz"):
        validate_crd(bad)


@pytest.mark.parametrize("overlay", ["overlays/openshift", "overlays/kubeflow", "overlays/dev"])
def test_overlay_contents(rendered, overlay):
    kinds = {o["kind"] for o in rendered[overlay]}
    assert {
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PersistentVolumeClaim",
        "RayCluster",
        "LocalQueue",
        "ServingRuntime",
    } <= kinds
    assert "Secret" not in kinds, (
        "secrets are created by the user from secret-templates/, never rendered"
    )
    extra = {
        "overlays/openshift": {"DataSciencePipelinesApplication", "Route", "ImageStream"},
        "overlays/dev": {"Job"},
    }.get(overlay, set())
    assert extra <= kinds
    for obj in rendered[overlay]:
        assert obj["metadata"].get("namespace") == "kiln", obj["metadata"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kiln"
    minio = [o for o in rendered[overlay] if o["metadata"]["name"] == "kiln-minio"]
    assert bool(minio) == (overlay == "overlays/dev")


def test_cluster_scoped_kueue(rendered):
    objs = rendered["cluster/kueue"]
    assert {o["kind"] for o in objs} == {"ResourceFlavor", "ClusterQueue"}
    assert all("namespace" not in o["metadata"] for o in objs)
    queue = next(o for o in objs if o["kind"] == "ClusterQueue")
    flavors = {o["metadata"]["name"] for o in objs if o["kind"] == "ResourceFlavor"}
    used = {f["name"] for g in queue["spec"]["resourceGroups"] for f in g["flavors"]}
    assert used == flavors
    local = next(o for o in rendered["overlays/kubeflow"] if o["kind"] == "LocalQueue")
    assert local["spec"]["clusterQueue"] == queue["metadata"]["name"]


def test_namespace_is_one_edit(kustomize, tmp_path):
    """Changing `namespace:` in an overlay moves everything, RoleBinding subjects included."""
    shutil.copytree(MANIFESTS, tmp_path / "manifests")
    for overlay in ("openshift", "kubeflow", "dev"):
        k = tmp_path / "manifests" / "overlays" / overlay / "kustomization.yaml"
        assert "\nnamespace: kiln\n" in k.read_text()
        k.write_text(k.read_text().replace("\nnamespace: kiln\n", "\nnamespace: team-a\n"))
    for overlay in ("openshift", "kubeflow", "dev"):
        objs = kustomize(tmp_path / "manifests" / "overlays" / overlay)
        for obj in objs:
            assert obj["metadata"]["namespace"] == "team-a", obj["metadata"]
        subjects = [s for o in objs if o["kind"] == "RoleBinding" for s in o["subjects"]]
        assert len(subjects) == 2 and all(s["namespace"] == "team-a" for s in subjects)


def _containers(obj):
    from kiln.components.common.pod_security import pod_specs

    for _, spec in pod_specs(obj):
        for key in ("initContainers", "containers"):
            yield from spec.get(key) or []


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_images_pinned_and_versions_match(rendered, kustomization):
    for obj in rendered[kustomization]:
        for ctr in _containers(obj):
            validate_ref(ctr["image"], f"{obj['kind']}/{obj['metadata']['name']} {ctr['name']}")
            if "/kiln-" in ctr["image"]:
                assert ctr["image"].startswith(DEFAULT_REGISTRY + "/kiln-")
        if obj["kind"] == "RayCluster":
            assert obj["spec"]["rayVersion"] == RAY_VERSION
            assert obj["spec"]["authOptions"]["mode"] == "token"
            images = {c["image"] for c in _containers(obj)}
            assert all("/kiln-gpu:" in i for i in images), images


def test_secret_templates(validate_crd):
    folder = MANIFESTS / "base" / "secret-templates"
    keys = set()
    for path in sorted(folder.glob("*.yaml")):
        secret = yaml.safe_load(path.read_text())
        assert _core_validate(secret)
        for key, value in secret["stringData"].items():
            keys.add(key)
            # Single values are all placeholders; in a config file, every password/key line is.
            lines = value.splitlines()
            lines = (
                [ln for ln in lines if "password" in ln or "key" in ln] if len(lines) > 1 else lines
            )
            assert lines and all("REPLACE_ME" in ln for ln in lines), (
                f"{path.name}: {key} holds a value"
            )
    # OpenShift AI data-connection keys, the ones pipeline steps and Ray pods read.
    assert {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_S3_ENDPOINT",
        "AWS_S3_BUCKET",
        "AWS_DEFAULT_REGION",
    } <= keys
    base = (MANIFESTS / "base" / "kustomization.yaml").read_text()
    assert "secret-templates" not in yaml.safe_load(base)["resources"]


def test_mlflow_server_is_authenticated_and_proxies_s3(rendered):
    for overlay in ("overlays/openshift", "overlays/kubeflow"):
        deploy = next(
            o
            for o in rendered[overlay]
            if o["kind"] == "Deployment" and o["metadata"]["name"] == "kiln-mlflow"
        )
        ctr = deploy["spec"]["template"]["spec"]["containers"][0]
        assert "--app-name=basic-auth" in ctr["args"]
        assert "--serve-artifacts" in ctr["args"]
        assert "--artifacts-destination=s3://$(AWS_S3_BUCKET)/mlflow" in ctr["args"]
        env = {e["name"]: e for e in ctr["env"]}
        # $(AWS_S3_BUCKET) expands only from variables defined in env, so it must be one
        assert env["AWS_S3_BUCKET"]["valueFrom"]["secretKeyRef"]["name"] == "kiln-data-connection"
        assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"].startswith("/etc/kiln/mlflow-auth/")
        assert (
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"]
            == "kiln-mlflow-auth"
        )
        assert "kiln-mlflow*" in env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"]
    route = next(o for o in rendered["overlays/openshift"] if o["kind"] == "Route")
    assert (
        route["spec"]["to"]["name"] == "kiln-mlflow"
        and route["spec"]["tls"]["termination"] == "edge"
    )
