"""components/common/images.py: one place for image references, env-overridable, digest-pinnable."""

from __future__ import annotations

import pytest

from kiln.components.common.images import all_images, default_tag, image_ref, validate_ref

DIGEST = "sha256:" + "ab" * 32


def test_defaults_follow_the_package_version():
    assert image_ref("cpu", {}) == f"quay.io/kiln/kiln-cpu:{default_tag()}"
    assert all_images({}) == {"cpu": image_ref("cpu", {}), "gpu": image_ref("gpu", {})}


def test_registry_tag_digest_and_full_override():
    env = {"KILN_IMAGE_REGISTRY": "registry.example:5000/team/", "KILN_IMAGE_TAG": "1.2.3"}
    assert image_ref("gpu", env) == "registry.example:5000/team/kiln-gpu:1.2.3"
    env["KILN_IMAGE_GPU_DIGEST"] = DIGEST
    assert image_ref("gpu", env) == f"registry.example:5000/team/kiln-gpu@{DIGEST}"
    assert image_ref("cpu", env) == "registry.example:5000/team/kiln-cpu:1.2.3"
    env["KILN_IMAGE_GPU"] = f"quay.io/me/custom@{DIGEST}"
    assert image_ref("gpu", env) == f"quay.io/me/custom@{DIGEST}"


@pytest.mark.parametrize(
    "env, match",
    [
        ({"KILN_IMAGE_CPU": "quay.io/me/kiln-cpu"}, "no tag or digest"),
        ({"KILN_IMAGE_CPU": "quay.io/me/kiln-cpu:latest"}, "latest"),
        ({"KILN_IMAGE_CPU": "Not A Ref"}, "not an image reference"),
        ({"KILN_IMAGE_CPU_DIGEST": "sha256:123"}, "64 lowercase hex"),
        ({"KILN_IMAGE_TAG": "bad tag"}, "KILN_IMAGE_TAG"),
    ],
)
def test_bad_references_are_refused(env, match):
    with pytest.raises(ValueError, match=match):
        image_ref("cpu", env)


def test_unknown_kind():
    with pytest.raises(ValueError, match="cpu, gpu"):
        image_ref("tpu", {})


def test_validate_ref_accepts_tag_and_digest():
    assert validate_ref("docker.io/vllm/vllm-openai:v0.11.0")
    assert validate_ref(f"quay.io/kiln/kiln-cpu:0.1.0@{DIGEST}")
