"""A model named any way Kiln accepts, as a local Hugging Face directory.

    fetched = fetch_model("models:/kiln-llama@champion", "tmp/", tracking_uri, "kiln-work")
    fetched.directory    # where its files are on this machine
    fetched.version      # the registry's record of a models:/ reference (`ModelRegistry.show`)

A local path is used as it is. `s3://…` (or `file:`) and the source of a registered version
are downloaded once into `download_to`, every file checked against the upload's sha256
manifest; the local S3 stand-in of `workdir` is found as `kiln run` left it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, NamedTuple


class FetchedModel(NamedTuple):
    directory: Path
    source: str  # where the files came from: the reference, or a registered version's source
    version: dict[str, Any] | None  # ModelRegistry.show() of a models:/ reference, else None


def fetch_model(
    ref: str, download_to: str | Path, tracking_uri: str = "", workdir: str = "kiln-work"
) -> FetchedModel:
    """The model `ref` (a directory, s3://…, file:…, models:/NAME@ALIAS or models:/NAME/VERSION)
    as a local directory; see the module docstring."""
    version = None
    if ref.startswith("models:/"):
        from kiln.components.common.registry import ModelRegistry

        version = ModelRegistry(tracking_uri, workdir).show_uri(ref)
        source = version["source"]
    elif ref.startswith(("s3://", "file:")):
        source = ref
    else:
        return FetchedModel(Path(ref), ref, None)
    from kiln.components.common import storage

    local = Path(download_to) / hashlib.sha256(source.encode()).hexdigest()[:16]
    if not (local / storage.MANIFEST_NAME).exists():  # written once every file is verified
        settings = storage.settings_for_workdir(workdir)
        storage.download_dir(source, local, verify=True, settings=settings)
    return FetchedModel(local, source, version)
