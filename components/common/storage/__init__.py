"""One storage API over local paths and `s3://bucket/key`, with end-to-end sha256 integrity.

    from kiln.components.common import storage
    manifest = storage.upload_dir("out/model", "s3://kiln/models/run-1")   # committed marker last
    storage.download_dir("s3://kiln/models/run-1", "/tmp/model")           # verified per file

S3 settings come from the environment under the OpenShift AI data-connection names
(`AWS_S3_ENDPOINT`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`,
`AWS_S3_BUCKET`), overridable per call with `S3Settings`. Without an endpoint but with
`KILN_S3_LOCAL_ROOT` set, `s3://bucket/key` maps to `<root>/bucket/key`: a local stand-in with
the same API and the same integrity records (used by `kiln run` when no S3 is given;
`settings_for_workdir` finds the one it left in WORKDIR/s3).

Integrity: every uploaded file's sha256 is stored in the object metadata (`x-amz-meta-sha256`;
a `<file>.kiln-meta.json` sidecar for local targets) and, for directories, in a manifest
`_KILN_MANIFEST.json` written last. A prefix is *committed* only once that manifest exists, so an
interrupted upload never looks complete. Downloads go to a temporary file, are hashed and are
renamed into place only when the hash matches the record.

Modules: `settings` (settings, errors, URIs), `s3` (boto3: the only module that imports it),
`files` (file-level API), `dirs` (commit/manifest layer).
"""

from kiln.components.common.storage.dirs import download_dir, is_committed, upload_dir
from kiln.components.common.storage.files import (
    delete,
    download_file,
    exists,
    list_files,
    open_read,
    own_sha256,
    read_manifest,
    recorded_sha256,
    upload_file,
)
from kiln.components.common.storage.settings import (
    MANIFEST_NAME,
    SIDECAR_SUFFIX,
    IntegrityError,
    S3Settings,
    StorageError,
    artifact_root,
    default_uri,
    is_s3,
    join,
    local_path,
    settings_for_workdir,
    settings_from_config,
    sha256_file,
    split_s3,
    stand_in_root,
)

__all__ = [
    "MANIFEST_NAME",
    "SIDECAR_SUFFIX",
    "IntegrityError",
    "S3Settings",
    "StorageError",
    "artifact_root",
    "default_uri",
    "delete",
    "download_dir",
    "download_file",
    "exists",
    "is_committed",
    "is_s3",
    "join",
    "list_files",
    "local_path",
    "open_read",
    "own_sha256",
    "read_manifest",
    "recorded_sha256",
    "settings_for_workdir",
    "settings_from_config",
    "sha256_file",
    "split_s3",
    "stand_in_root",
    "upload_dir",
    "upload_file",
]
