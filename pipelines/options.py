"""What the pipeline is compiled and run with, importable without kfp: the `kiln` parser reads
these defaults when it is built, so `kiln --help` starts no heavy import.

    opts = PipelineOptions(data_connection="my-connection")   # compile time (`kiln compile`)
    LOCAL_DEFAULTS                                            # `kiln run`'s run parameters
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kiln.components.common import kube
from kiln.components.common.config import RunParams

# `kiln run` trains on one Ray Train worker of a local Ray by default; otherwise the
# pipeline's own defaults.
LOCAL_DEFAULTS = RunParams(workers=1)


@dataclass
class PipelineOptions:
    """What is fixed when the pipeline is compiled (everything else is a run parameter).

    Attributes:
        data_connection: Secret with the S3 data-connection keys (OpenShift AI data connection).
        mlflow_secret: optional Secret with MLFLOW_TRACKING_USERNAME/PASSWORD ('' = none).
        model_registry_secret: optional Secret whose key `token` the publish step gets as
            MODEL_REGISTRY_TOKEN, for `publish.model_registry_url` ('' = none).
        gpu_resource: the accelerator resource the training step requests.
        gpu_toleration: taint key tolerated by the training step ('' = none).
        training_cpu, training_memory: the training step's CPU/memory requests (and limits).
        extra_env: plain (non-secret) env vars for every step, e.g. KILN_S3_* tuning.
        shared_pvc: PVC also mounted by the Ray cluster at `shared_mount` ('' = none): with a
            Ray address, the training step stages tokens and outputs there (KILN_SHARED_DIR).
        shared_mount: where the shared PVC is mounted in the training step (and the Ray pods).
        ray_token_secret: Secret holding the Ray cluster's auth token ('' = none): given to the
            training step as RAY_AUTH_TOKEN (with RAY_AUTH_MODE=token), so a Ray address with
            token auth on (as in manifests/base/raycluster.yaml) accepts its job submission.
        ray_token_key: the key of the token inside that Secret.
        sweep_parallelism: sweep points trained at once (0 = all; KFP fixes it at compile time).
        queue_name: Kueue LocalQueue of the training steps' pods (label
            `kueue.x-k8s.io/queue-name`; '' = none): Kueue holds a GPU pod until the queue's
            quota admits it. Default: the LocalQueue manifests/base ships.
    """

    data_connection: str = "kiln-data-connection"
    mlflow_secret: str = ""
    model_registry_secret: str = ""
    gpu_resource: str = "nvidia.com/gpu"
    gpu_toleration: str = "nvidia.com/gpu"
    training_cpu: str = "4"
    training_memory: str = "16G"
    extra_env: dict[str, str] = field(default_factory=dict)
    shared_pvc: str = ""
    shared_mount: str = "/kiln-shared"
    ray_token_secret: str = ""
    ray_token_key: str = "auth_token"
    sweep_parallelism: int = 0
    queue_name: str = kube.LOCAL_QUEUE

    def __post_init__(self) -> None:
        kube.queue_labels(self.queue_name, "queue_name")  # a bad name fails at compile time
