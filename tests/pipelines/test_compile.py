"""The compiled pipeline YAML: steps, images, secrets by name only, GPU on training, Pod Security."""

import pytest
import yaml

from kiln.components.common.images import image_ref
from kiln.components.common.pod_security import check_kfp_pipeline
from kiln.pipelines.pretrain import DATA_CONNECTION_KEYS, PipelineOptions, compile_pipeline

STAGES = {"prepare", "ingest", "tokenize", "pretrain", "evaluate", "publish"}
STEPS = STAGES | {"finalize"}


def _compile(tmp_path, **opts) -> tuple[str, list[dict]]:
    out = compile_pipeline(str(tmp_path / "pipeline.yaml"), PipelineOptions(**opts))
    text = open(out).read()
    return text, list(yaml.safe_load_all(text))


def _spec(docs: list[dict]) -> dict:
    return next(d for d in docs if "deploymentSpec" in d)


def _k8s(docs: list[dict]) -> dict:
    platform = next(d for d in docs if "platforms" in d)
    return platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_every_stage_is_a_step_on_the_right_image(tmp_path):
    _, docs = _compile(tmp_path)
    executors = _spec(docs)["deploymentSpec"]["executors"]
    assert {name.removeprefix("exec-") for name in executors} == STEPS
    for name, executor in executors.items():
        kind = "gpu" if name == "exec-pretrain" else "cpu"
        assert executor["container"]["image"] == image_ref(kind), name
        # install_kfp_package=False: the image brings kfp; the step never pip-installs at run time
        assert "pip install" not in " ".join(executor["container"]["command"]), name


def test_images_follow_the_env_override(tmp_path, monkeypatch):
    digest = "sha256:" + "a" * 64
    monkeypatch.setenv("KILN_IMAGE_GPU", f"registry.example.com/me/kiln-gpu@{digest}")
    import importlib

    import kiln.components.pretrain.component as comp
    import kiln.pipelines.pretrain as pipe

    importlib.reload(comp)
    importlib.reload(pipe)
    try:
        docs = list(yaml.safe_load_all(open(pipe.compile_pipeline(str(tmp_path / "p.yaml")))))
        image = _spec(docs)["deploymentSpec"]["executors"]["exec-pretrain"]["container"]["image"]
        assert image == f"registry.example.com/me/kiln-gpu@{digest}"
    finally:
        monkeypatch.delenv("KILN_IMAGE_GPU")
        importlib.reload(comp)
        importlib.reload(pipe)


def test_secrets_are_referenced_by_name_only(tmp_path, secret_canary):
    text, docs = _compile(tmp_path, data_connection="my-data-conn", mlflow_secret="my-mlflow")
    secret_canary.assert_absent(text, "compiled pipeline YAML")
    for name, config in _k8s(docs).items():
        envs = {
            (s["secretName"], e["envVar"]) for s in config["secretAsEnv"] for e in s["keyToEnv"]
        }
        assert {("my-data-conn", k) for k in DATA_CONNECTION_KEYS} <= envs, name
        assert ("my-mlflow", "MLFLOW_TRACKING_PASSWORD") in envs, name
    assert "stringData" not in text and "AWS_SECRET_ACCESS_KEY:" not in text.replace(
        "envVar: AWS_SECRET_ACCESS_KEY", ""
    )


def test_training_step_requests_gpus_and_tolerates_the_taint(tmp_path):
    _, docs = _compile(tmp_path, gpu_toleration="nvidia.com/gpu")
    train = _spec(docs)["deploymentSpec"]["executors"]["exec-pretrain"]["container"]
    accel = train["resources"]["accelerator"]
    assert accel["resourceType"] == "nvidia.com/gpu"
    assert "gpus_per_worker" in accel["resourceCount"]  # the run parameter, not a constant
    tolerations = _k8s(docs)["exec-pretrain"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    for name, executor in _spec(docs)["deploymentSpec"]["executors"].items():
        if name != "exec-pretrain":
            assert "accelerator" not in executor["container"].get("resources", {}), name


def _all_tasks(spec: dict) -> dict:
    """Every task of the pipeline, including those inside groups (the exit handler's)."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return tasks


def test_caching_only_on_pure_steps(tmp_path):
    _, docs = _compile(tmp_path)
    tasks = _all_tasks(_spec(docs))
    assert set(tasks) >= STEPS
    cached = {name for name, t in tasks.items() if t.get("cachingOptions", {}).get("enableCache")}
    assert cached == {"ingest", "tokenize"}


@pytest.mark.parametrize("openshift", [False, True])
def test_pod_security_restricted_passes(tmp_path, openshift):
    _, docs = _compile(tmp_path)
    assert check_kfp_pipeline(docs, openshift=openshift) == []


def test_pipeline_parameters(tmp_path):
    _, docs = _compile(tmp_path)
    params = _spec(docs)["root"]["inputDefinitions"]["parameters"]
    expected = {
        "corpus_uri", "preset", "overrides", "model_name", "s3_bucket", "mlflow_uri",
        "ray_address", "workers", "gpus_per_worker", "baseline_model", "run_id",
    }  # fmt: skip
    assert set(params) == expected
    assert not params["corpus_uri"].get("isOptional")


def test_shared_pvc_only_on_the_training_step(tmp_path):
    _, docs = _compile(tmp_path, shared_pvc="kiln-shared", shared_mount="/shared")
    configs = _k8s(docs)
    mounts = configs["exec-pretrain"]["pvcMount"]
    assert [(m["constant"], m["mountPath"]) for m in mounts] == [("kiln-shared", "/shared")]
    env = _spec(docs)["deploymentSpec"]["executors"]["exec-pretrain"]["container"]["env"]
    assert {"name": "KILN_SHARED_DIR", "value": "/shared"} in env
    assert all("pvcMount" not in c for name, c in configs.items() if name != "exec-pretrain")
    assert check_kfp_pipeline(docs, openshift=True) == []


def test_ray_token_reaches_only_the_training_step_by_secret_name(tmp_path, secret_canary):
    text, docs = _compile(tmp_path, ray_token_secret="kiln-ray-token")
    secret_canary.assert_absent(text, "compiled pipeline YAML")
    with_token = {
        name
        for name, config in _k8s(docs).items()
        for s in config["secretAsEnv"]
        if s["secretName"] == "kiln-ray-token"
        and {"secretKey": "auth_token", "envVar": "RAY_AUTH_TOKEN"} in s["keyToEnv"]
    }
    assert with_token == {"exec-pretrain"}


def test_finalize_runs_as_the_exit_handler_of_every_stage(tmp_path):
    _, docs = _compile(tmp_path)
    spec = _spec(docs)
    tasks = spec["root"]["dag"]["tasks"]
    [group] = [name for name in tasks if name != "finalize"]
    final = tasks["finalize"]
    assert final["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"  # runs on failure
    assert final["inputs"]["parameters"]["status"]["taskFinalStatus"]["producerTask"] == group
    inner = spec["components"][tasks[group]["componentRef"]["name"]]["dag"]["tasks"]
    assert set(inner) == STAGES


def test_the_sweep_pipeline_compiles_with_the_same_security_and_a_parallel_for(tmp_path, capsys):
    from kiln.pipelines.cli import main

    out = tmp_path / "sweep.yaml"
    args = ["compile", "--pipeline", "sweep", "-o", str(out), "--sweep-parallelism", "4"]
    assert main([*args, "--data-connection", "my-conn"]) == 0
    docs = list(yaml.safe_load_all(out.read_text()))
    spec = _spec(docs)
    executors = spec["deploymentSpec"]["executors"]
    steps = {"prepare", "ingest", "tokenize", "sweep-grid", "sweep-point", "sweep-fit", "finalize"}
    assert {name.removeprefix("exec-") for name in executors} == steps
    for name, executor in executors.items():
        kind = "gpu" if name == "exec-sweep-point" else "cpu"
        assert executor["container"]["image"] == image_ref(kind), name
    point = executors["exec-sweep-point"]["container"]
    assert "gpus_per_worker" in point["resources"]["accelerator"]["resourceCount"]
    loops = [t for t in _all_tasks(spec).values() if "parameterIterator" in t]
    assert [t["iteratorPolicy"]["parallelismLimit"] for t in loops] == [4]
    for name, config in _k8s(docs).items():  # the data connection by name on every step
        assert any(s["secretName"] == "my-conn" for s in config["secretAsEnv"]), name
    assert check_kfp_pipeline(docs, openshift=True) == []
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"corpus_uri", "budgets", "sizes", "spread", "target_budget"} <= set(params)


def test_the_sft_pipeline_compiles_with_the_same_security_and_exit_handler(tmp_path):
    import dataclasses
    import inspect

    from kiln.components.common.config import RunParams
    from kiln.pipelines.cli import main
    from kiln.pipelines.sft import build_sft_pipeline

    out = tmp_path / "sft.yaml"
    assert main(["compile", "--pipeline", "sft", "-o", str(out), "--data-connection", "c"]) == 0
    docs = list(yaml.safe_load_all(out.read_text()))
    spec = _spec(docs)
    executors = spec["deploymentSpec"]["executors"]
    stages = {"prepare", "conversations", "sft", "sft-evaluate", "publish"}
    assert {name.removeprefix("exec-") for name in executors} == stages | {"finalize"}
    for name, executor in executors.items():
        kind = "gpu" if name == "exec-sft" else "cpu"
        assert executor["container"]["image"] == image_ref(kind), name
    assert "gpus_per_worker" in str(executors["exec-sft"]["container"]["resources"])
    for name, config in _k8s(docs).items():
        assert any(s["secretName"] == "c" for s in config["secretAsEnv"]), name
    assert check_kfp_pipeline(docs, openshift=True) == []
    tasks = spec["root"]["dag"]["tasks"]
    group = next(name for name in tasks if name.startswith("exit-handler"))
    inner = spec["components"][tasks[group]["componentRef"]["name"]]["dag"]["tasks"]
    assert set(inner) == stages
    assert tasks["finalize"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    # The run parameters are RunParams' (names and defaults; sft-tiny is this pipeline's preset).
    signature = inspect.signature(build_sft_pipeline().pipeline_func)
    params = {n: p.default for n, p in signature.parameters.items() if n != "corpus_uri"}
    expected = dataclasses.replace(RunParams(), preset="sft-tiny").pipeline_arguments()
    assert params == expected


def test_model_registry_token_reaches_only_publish_by_secret_name(tmp_path, secret_canary):
    from kiln.pipelines.cli import main

    out = tmp_path / "p.yaml"
    assert main(["compile", "-o", str(out), "--model-registry-secret", "kiln-mr-token"]) == 0
    text = out.read_text()
    secret_canary.assert_absent(text, "compiled pipeline YAML")
    with_token = {
        name
        for name, config in _k8s(list(yaml.safe_load_all(text))).items()
        for s in config["secretAsEnv"]
        if s["secretName"] == "kiln-mr-token"
        and s["keyToEnv"] == [{"secretKey": "token", "envVar": "MODEL_REGISTRY_TOKEN"}]
    }
    assert with_token == {"exec-publish"}
    assert "MODEL_REGISTRY_TOKEN" not in _compile(tmp_path)[0]  # no secret: no token
