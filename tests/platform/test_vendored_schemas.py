"""The vendored CRDs are the upstream files the README says they are, and the fixture reads them."""

from __future__ import annotations

import gzip
import hashlib
import re

from .conftest import VENDORED_CRDS, crd_files, read_crd

README = VENDORED_CRDS.parent / "README.md"
# The kinds some test validates: a refresh that drops one fails here, not as "no CRD schema".
NEEDED = {
    ("ray.io/v1", "RayCluster"),
    ("serving.kserve.io/v1beta1", "InferenceService"),
    ("serving.kserve.io/v1alpha1", "ServingRuntime"),
    ("datasciencepipelinesapplications.opendatahub.io/v1", "DataSciencePipelinesApplication"),
    ("kueue.x-k8s.io/v1beta2", "LocalQueue"),
    ("kueue.x-k8s.io/v1beta2", "ClusterQueue"),
    ("kueue.x-k8s.io/v1beta2", "ResourceFlavor"),
    ("trainer.kubeflow.org/v1alpha1", "TrainJob"),
    ("trainer.kubeflow.org/v1alpha1", "TrainingRuntime"),
    ("trainer.kubeflow.org/v1alpha1", "ClusterTrainingRuntime"),
}


def _readme_rows() -> dict[str, str]:
    """`{file: sha256}` from the README's table."""
    rows = re.findall(r"^\| (\S+\.yaml\.gz) \|.*\| ([0-9a-f]{64}) \|", README.read_text(), re.M)
    return dict(rows)


def test_every_vendored_file_is_the_upstream_file_the_readme_names():
    files = {p.name: p for p in crd_files(VENDORED_CRDS)}
    rows = _readme_rows()
    assert set(files) == set(rows), "tests/schemas/README.md and crds/ list different files"
    for name, path in files.items():
        data = gzip.decompress(path.read_bytes())
        assert hashlib.sha256(data).hexdigest() == rows[name], f"{name}: not the README's sha256"


def test_each_file_is_one_crd_with_a_schema_per_version(crd_schemas):
    for path in crd_files(VENDORED_CRDS):
        crd = read_crd(path)
        assert crd["kind"] == "CustomResourceDefinition", path.name
        for version in crd["spec"]["versions"]:
            assert version["schema"]["openAPIV3Schema"]["type"] == "object", path.name
    assert NEEDED <= set(crd_schemas)
