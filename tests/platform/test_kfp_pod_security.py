"""The Pod Security checker applied to a compiled KFP pipeline (kfp + kfp-kubernetes, no cluster)."""
# No `from __future__ import annotations` here: KFP reads the component's real type annotations.

import pytest
import yaml

from kiln.components.common.pod_security import check_kfp_pipeline, kfp_pod_specs

dsl = pytest.importorskip("kfp.dsl")
compiler = pytest.importorskip("kfp.compiler")
kubernetes = pytest.importorskip("kfp.kubernetes")


@dsl.component(base_image="quay.io/kiln/kiln-cpu:0.1.0")
def echo(text: str) -> str:
    return text


def _compile(tmp_path, secure: bool, user: int | None = None) -> list[dict]:
    @dsl.pipeline(name="probe")
    def probe():
        first = echo(text="a")
        kubernetes.use_secret_as_env(
            first,
            secret_name="kiln-data-connection",
            secret_key_to_env={"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID"},
        )
        kubernetes.mount_pvc(first, pvc_name="scratch", mount_path="/data")
        second = echo(text=first.output)
        if secure:
            for task in (first, second):
                kubernetes.set_security_context(task, run_as_non_root=True, run_as_user=user)

    out = tmp_path / "probe.yaml"
    compiler.Compiler().compile(probe, str(out))
    return list(yaml.safe_load_all(out.read_text()))


def test_secured_pipeline_passes(tmp_path):
    docs = _compile(tmp_path, secure=True)
    specs = dict(kfp_pod_specs(docs))
    assert set(specs) == {"exec-echo", "exec-echo-2"}
    assert any("persistentVolumeClaim" in v for s in specs.values() for v in s.get("volumes", []))
    assert check_kfp_pipeline(docs, openshift=True) == []


def test_missing_run_as_non_root_is_caught(tmp_path):
    problems = check_kfp_pipeline(_compile(tmp_path, secure=False))
    assert len([p for p in problems if "runAsNonRoot" in p]) == 2


def test_fixed_uid_fails_only_on_openshift(tmp_path):
    docs = _compile(tmp_path, secure=True, user=1001)
    assert check_kfp_pipeline(docs) == []
    assert any("runAsUser" in p for p in check_kfp_pipeline(docs, openshift=True))
    assert any(
        "allowPrivilegeEscalation" in p
        for p in check_kfp_pipeline(docs, assume_backend_defaults=False)
    )


def test_not_a_pipeline():
    with pytest.raises(ValueError, match="deploymentSpec"):
        check_kfp_pipeline([{"kind": "Deployment"}])
