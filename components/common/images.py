"""Container image references: the one place the pipeline, the manifests and the docs get them from.

Kiln ships two images, built by `make images` from `images/Containerfile.{cpu,gpu}`:

- `cpu`: ingest, tokenize, evaluate, publish and the KFP executor (`install_kfp_package=False`).
- `gpu`: CUDA + Ray, for the Ray head and the training workers.

A reference is resolved in this order (first set wins), so a cluster can pin by digest without a
code change:

1. `KILN_IMAGE_CPU` / `KILN_IMAGE_GPU`: a full reference, e.g. `quay.io/me/kiln-gpu@sha256:…`.
2. `KILN_IMAGE_CPU_DIGEST` / `KILN_IMAGE_GPU_DIGEST` (`sha256:<64 hex>`): `REGISTRY/NAME@DIGEST`.
3. `KILN_IMAGE_REGISTRY` (default `quay.io/kiln`) + `/kiln-{kind}:` + `KILN_IMAGE_TAG` (default: the
   installed Kiln version, the same default as `make images`).

    >>> image_ref("gpu")  # doctest: +SKIP
    'quay.io/kiln/kiln-gpu:0.1.0'
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib import metadata

KINDS = ("cpu", "gpu")
DEFAULT_REGISTRY = "quay.io/kiln"
# The GPU image is built FROM rayproject/ray:<RAY_VERSION>-py<PYTHON_VERSION without dot>-gpu and the
# RayCluster `rayVersion` must match the client's Ray; tests check all three agree.
RAY_VERSION = "2.60.0"
PYTHON_VERSION = "3.11"

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# registry[:port]/path[:tag][@sha256:digest]; deliberately strict about what a tag may contain.
_REF = re.compile(
    r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)


def default_tag() -> str:
    """The installed Kiln version, used as the image tag unless `KILN_IMAGE_TAG` is set."""
    try:
        return metadata.version("kiln")
    except metadata.PackageNotFoundError:  # running from a source tree without `pip install`
        return "0.1.0"


def validate_ref(ref: str, what: str = "image reference") -> str:
    """Check that `ref` is a usable, pinned image reference and return it.

    Args:
        ref: e.g. `quay.io/kiln/kiln-cpu:0.1.0` or `…/kiln-cpu@sha256:<64 hex>`.
        what: where the value came from, for the error message.

    Raises:
        ValueError: malformed, or neither a tag nor a digest, or the mutable tag `latest`.
    """
    if not _REF.match(ref):
        raise ValueError(f"{what}: {ref!r} is not an image reference like registry/name:tag")
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        raise ValueError(f"{what}: {ref!r} has no tag or digest; pin a version or sha256 digest")
    if last.split("@")[0].endswith(":latest"):
        raise ValueError(f"{what}: {ref!r} uses the mutable tag 'latest'; pin a version or digest")
    return ref


def image_ref(kind: str, env: Mapping[str, str] | None = None) -> str:
    """The image reference for one Kiln image.

    Args:
        kind: `cpu` or `gpu`.
        env: where to read the `KILN_IMAGE_*` overrides (default: `os.environ`).

    Returns:
        A validated reference, by tag or by digest.

    Raises:
        ValueError: unknown kind, or an override that is not a pinned reference.
    """
    if kind not in KINDS:
        raise ValueError(f"image kind {kind!r}: expected one of {', '.join(KINDS)}")
    env = os.environ if env is None else env
    key = f"KILN_IMAGE_{kind.upper()}"
    if env.get(key):
        return validate_ref(env[key], key)
    registry = env.get("KILN_IMAGE_REGISTRY", DEFAULT_REGISTRY).rstrip("/")
    repo = f"{registry}/kiln-{kind}"
    digest = env.get(f"{key}_DIGEST", "")
    if digest:
        if not _DIGEST.match(digest):
            raise ValueError(f"{key}_DIGEST: {digest!r} is not sha256:<64 lowercase hex>")
        return validate_ref(f"{repo}@{digest}", f"{key}_DIGEST")
    tag = env.get("KILN_IMAGE_TAG", "") or default_tag()
    return validate_ref(f"{repo}:{tag}", "KILN_IMAGE_REGISTRY/KILN_IMAGE_TAG")


def all_images(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`{kind: reference}` for every Kiln image (what `kiln compile` bakes into the pipeline)."""
    return {kind: image_ref(kind, env) for kind in KINDS}
