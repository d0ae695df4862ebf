"""The workbench ImageStream: what the OpenShift AI dashboard reads to list the Kiln workbench
image, with valid JSON where it expects JSON, in step with the image it names.

Label and annotation names as in opendatahub-io/notebooks `docs/workbench-imagestreams.md` and
odh-dashboard's `IMAGE_ANNOTATIONS` (backend/src/utils/constants.ts). No ImageStream schema is
vendored, so tests/platform/test_manifests.py checks its structure field by field.
"""

from __future__ import annotations

import json
import re
import tomllib

import pytest
import yaml

from kiln.components.common.images import DEFAULT_REGISTRY, validate_ref

from .conftest import MANIFESTS, REPO

SOURCE = MANIFESTS / "overlays" / "openshift" / "workbench-imagestream.yaml"


@pytest.fixture
def stream(rendered) -> dict:
    (found,) = [o for o in rendered["overlays/openshift"] if o["kind"] == "ImageStream"]
    return found


def _packages(text: str, what: str) -> dict[str, str]:
    """`[{"name": ..., "version": ...}, ...]` (the dashboard's format) as {name: version}."""
    items = json.loads(text)
    assert isinstance(items, list) and items, f"{what}: a non-empty JSON list"
    for item in items:
        assert set(item) >= {"name", "version"}, f"{what}: {item} needs name and version"
        assert all(isinstance(item[k], str) and item[k] for k in ("name", "version")), item
    return {item["name"]: item["version"] for item in items}


def _pins() -> dict[str, str]:
    lines = (REPO / "images" / "constraints.txt").read_text().splitlines()
    return dict(ln.lower().split("==") for ln in lines if "==" in ln and not ln.startswith("#"))


def test_dashboard_lists_it(stream):
    meta = stream["metadata"]
    assert meta["labels"]["opendatahub.io/notebook-image"] == "true"
    notes = meta["annotations"]
    assert notes["opendatahub.io/notebook-image-name"].startswith("Kiln")
    assert len(notes["opendatahub.io/notebook-image-desc"]) > 40
    assert notes["opendatahub.io/notebook-image-order"].isdigit()
    accelerators = json.loads(notes["opendatahub.io/recommended-accelerators"])
    assert isinstance(accelerators, list) and all(isinstance(a, str) for a in accelerators)
    assert meta["namespace"] == "kiln"  # the overlay's project (project-scoped image)
    assert "namespace" not in yaml.safe_load(SOURCE.read_text())["metadata"], (
        "the file itself names no namespace, so an admin can apply it to the dashboard's"
    )


def test_the_tag_describes_the_image_it_names(stream):
    (tag,) = stream["spec"]["tags"]
    notes = tag["annotations"]
    assert notes["opendatahub.io/workbench-image-recommended"] == "true"
    ref = tag["from"]["name"]
    validate_ref(ref, "ImageStream kiln-workbench")
    repo, _, version = ref.rpartition(":")
    assert repo == f"{DEFAULT_REGISTRY}/kiln-workbench" == notes["openshift.io/imported-from"]
    assert tag["name"] == version
    base = yaml.safe_load((MANIFESTS / "base" / "kustomization.yaml").read_text())
    tags = {i["name"].rsplit("/", 1)[-1]: i.get("newTag") for i in base["images"]}
    assert version == tags["kiln-cpu"], "tag the workbench like the other images"

    software = _packages(notes["opendatahub.io/notebook-software"], "notebook-software")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert software["Kiln"] == project["version"]
    containerfile = (REPO / "images" / "Containerfile.workbench").read_text()
    base_python = re.search(r"odh-workbench-jupyter-minimal-cpu-py3(\d+)-", containerfile)
    assert software["Python"] == f"v3.{base_python[1]}", "the base image's Python"

    deps = _packages(notes["opendatahub.io/notebook-python-dependencies"], "python-dependencies")
    pins = _pins()
    names = {"PyTorch": "torch", "Ray": "ray", "Kfp": "kfp", "MLflow": "mlflow", "Boto3": "boto3"}
    for shown, version in deps.items():
        pinned = pins[names[shown]]
        assert pinned.startswith(version + "."), f"{shown} {version}: constraints pin {pinned}"
