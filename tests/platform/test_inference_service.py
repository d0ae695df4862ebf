"""InferenceService bodies validate against the KServe CRD and match the shipped ServingRuntime."""

from __future__ import annotations

import pytest

from kiln.components.common import kube
from kiln.components.common.pod_security import check_object
from kiln.components.publish.inference_service import (
    MODEL_FORMAT,
    RUNTIME,
    apply_inference_service,
    render_inference_service,
)

URI = "s3://models/kiln/tiny/3/model"


@pytest.mark.parametrize("gpus", [0, 1, 4])
def test_body_validates_and_is_restricted(validate_crd, gpus):
    body = render_inference_service(
        "kiln-tiny",
        URI,
        namespace="team-a",
        gpus=gpus,
        max_model_len=256,
        model_name="tiny",
        model_version="3",
        alias="champion",
    )
    validate_crd(body)
    assert check_object(body, openshift=True) == []
    pred = body["spec"]["predictor"]
    assert pred["model"]["storageUri"] == URI
    assert pred["serviceAccountName"] == kube.MODEL_SERVER_SERVICE_ACCOUNT
    assert pred["model"]["resources"]["limits"].get("nvidia.com/gpu") == (
        str(gpus) if gpus else None
    )
    assert "--max-model-len=256" in pred["model"]["args"]
    assert body["metadata"]["labels"]["kiln.dev/alias"] == "champion"
    assert ("tolerations" in pred) == bool(gpus)


def test_matches_the_shipped_runtime_and_service_account(rendered):
    objs = rendered["overlays/kubeflow"]
    runtime = next(o for o in objs if o["kind"] == "ServingRuntime")
    assert runtime["metadata"]["name"] == RUNTIME
    assert MODEL_FORMAT in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    sa = next(
        o
        for o in objs
        if o["kind"] == "ServiceAccount"
        and o["metadata"]["name"] == kube.MODEL_SERVER_SERVICE_ACCOUNT
    )
    assert sa["secrets"] == [{"name": kube.DATA_CONNECTION_SECRET}]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"name": "Kiln"}, "InferenceService name"),
        ({"storage_uri": "/local/model"}, "storage_uri"),
        ({"min_replicas": 3, "max_replicas": 1}, "replicas"),
        ({"model_version": "v 3"}, "model-version"),
    ],
)
def test_bad_input(kw, match):
    args = {"name": "kiln-tiny", "storage_uri": URI, "namespace": "ns", **kw}
    with pytest.raises(ValueError, match=match):
        render_inference_service(args.pop("name"), args.pop("storage_uri"), **args)


def test_apply_creates_then_replaces(fake_kube, validate_crd):
    fake_kube.validate = validate_crd
    client = kube.api_client(fake_kube.url)
    first = apply_inference_service(
        render_inference_service("kiln-tiny", URI, namespace="ns"), client
    )
    assert first["metadata"]["resourceVersion"] == "1"
    newer = render_inference_service(
        "kiln-tiny", URI.replace("/3/", "/4/"), namespace="ns", model_version="4"
    )
    second = apply_inference_service(newer, client)
    assert second["metadata"]["resourceVersion"] == "2"
    stored = fake_kube.objects["inferenceservices/ns/kiln-tiny"]
    assert stored["spec"]["predictor"]["model"]["storageUri"].endswith("/4/model")
    assert [m for m, _ in fake_kube.requests] == ["POST", "POST", "GET", "PUT"]
    assert fake_kube.rejected == []
