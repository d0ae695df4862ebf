"""The built-in corpus and the run config that the pipeline's `prepare` step resolves."""

import json

import pytest

from kiln.components.common.pipeline_run import (
    RunParams,
    parse_overrides,
    prepare_run,
    step_config,
)
from kiln.pipelines.corpus import CORPUS_NAME, help_topics, write_builtin_corpus


def test_builtin_corpus_is_real_deterministic_text(tmp_path):
    path = write_builtin_corpus(tmp_path, max_bytes=600_000)
    assert path.name == CORPUS_NAME
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) and len(rows) > 100
    sources = {r["source"] for r in rows}
    assert sources == {"python-help", "python-stdlib"}
    text = " ".join(r["text"] for r in rows)
    assert len(text) > 400_000  # all help topics plus some docstrings
    assert " the " in text and "def " in text  # English prose about Python
    mtime = path.stat().st_mtime_ns
    assert write_builtin_corpus(tmp_path, max_bytes=600_000) == path
    assert path.stat().st_mtime_ns == mtime  # same content: not rewritten


def test_help_topics_are_chunked():
    chunks = list(help_topics())
    assert len(chunks) > 200
    assert max(len(t) for _, t in chunks) < 60_000


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", []),
        ('["train.max_steps=5", "model.dim=32"]', ["train.max_steps=5", "model.dim=32"]),
        ("train.max_steps=5\nmodel.dim=32", ["train.max_steps=5", "model.dim=32"]),
        ("train.max_steps=5; model.dim=32", ["train.max_steps=5", "model.dim=32"]),
    ],
)
def test_parse_overrides(text, expected):
    assert parse_overrides(text) == expected


def test_parse_overrides_rejects_a_non_list():
    with pytest.raises(ValueError, match="JSON list"):
        parse_overrides('[{"a": 1}]')


def test_pipeline_parameters_win_over_preset_and_overrides():
    cfg = RunParams(
        preset="tiny",
        overrides='["train.max_steps=7", "dist.workers=3"]',
        model_name="m1",
        s3_bucket="s3://bucket-a/",
        mlflow_uri="http://mlflow:5000",
        workers=2,
        gpus_per_worker=1,
        ray_address="http://head:8265",
    ).resolve()
    assert cfg.train.max_steps == 7
    assert cfg.dist.workers == 2 and cfg.dist.use_gpu and cfg.dist.ray_address == "http://head:8265"
    assert cfg.storage.root == "s3://bucket-a/kiln"
    assert cfg.tracking.uri == "http://mlflow:5000"
    assert cfg.tracking.model_name == "m1"
    keep = RunParams(overrides=["dist.workers=3"], workers=-1, gpus_per_worker=-1).resolve()
    assert keep.dist.workers == 3 and not keep.dist.use_gpu
    assert keep.tracking.model_name == "kiln-llama"  # no model_name parameter: the config's
    with pytest.raises(ValueError, match="unknown config key"):
        RunParams(overrides='["train.nope=1"]').resolve()


def test_prepare_run_opens_one_run_with_the_config(tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_WORKDIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    params = RunParams(overrides="train.max_steps=9")
    config_json, run_id, *_ = prepare_run(params, pipeline_run_id="kfp-123")
    assert run_id and step_config(config_json).train.max_steps == 9
    from mlflow.tracking import MlflowClient

    run = MlflowClient().get_run(run_id)
    assert run.data.params["train.max_steps"] == "9"
    assert run.data.tags["pipeline_run_id"] == "kfp-123"
    params.run_id = run_id
    again_json, again, *_ = prepare_run(params)
    assert again == run_id and again_json == config_json  # a given run is joined, not duplicated


def test_step_config_names_the_problem():
    with pytest.raises(ValueError, match="config_json: not valid JSON"):
        step_config("{nope")


def test_kiln_run_reports_a_failed_step_and_marks_the_run_failed(tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    from kiln.pipelines.cli import main

    for key in ("AWS_S3_ENDPOINT", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "KILN_WORKDIR"):
        monkeypatch.delenv(key, raising=False)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": "too short"}\n')  # every document filtered: tokenize has no text
    code = main(["run", "--workdir", str(tmp_path / "w"), "--data", str(empty), "--workers", "0"])
    assert code == 1
    captured = capsys.readouterr()
    assert "kiln run: Pipeline 'kiln-pretrain' finished with status FAILURE" in captured.err
    # The terminal names the failed step and shows the end of its log (the error), not KFP's dump.
    failed = [line for line in captured.out.splitlines() if line.startswith("✗ ")]
    assert len(failed) == 1 and "FAILURE" in failed[0]
    assert "Error" in captured.out.split(failed[0], 1)[1]
    assert "executor_input" not in captured.out
    assert "executor_input" in (tmp_path / "w" / "kiln-run.log").read_text()  # all of it is kept
    client = MlflowClient(f"sqlite:///{(tmp_path / 'w').resolve()}/mlflow.db")
    [exp] = [e for e in client.search_experiments() if e.name == "kiln"]
    [run] = client.search_runs([exp.experiment_id])
    assert run.info.status == "FAILED"


def test_exit_handler_closes_the_run_prepare_opened_when_a_step_fails(tmp_path, monkeypatch):
    """As on a cluster: no caller-made run, `prepare` opens one, a later step fails, and the
    pipeline's exit handler (`finalize`) marks that run FAILED with the error."""
    import kfp.local
    from mlflow.tracking import MlflowClient

    from kiln.pipelines.pretrain import build_pipeline

    for key in ("AWS_S3_ENDPOINT", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("KILN_WORKDIR", str(tmp_path / "w"))
    monkeypatch.setenv("KILN_S3_LOCAL_ROOT", str(tmp_path / "s3"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": "too short"}\n')  # every document filtered: a later step fails
    kfp.local.init(
        runner=kfp.local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "kfp"),
        raise_on_error=False,
    )
    build_pipeline()(corpus_uri=str(empty), mlflow_uri=uri, workers=0)
    client = MlflowClient(uri)
    [exp] = [e for e in client.search_experiments() if e.name == "kiln"]
    [run] = client.search_runs([exp.experiment_id])
    assert run.data.tags["pipeline_run_id"]  # opened by prepare, found again by that tag
    assert run.info.status == "FAILED"
    assert "failed" in run.data.tags["pipeline_error"]  # KFP's message for the failed group


def test_data_steps_get_only_their_section_so_their_cache_survives_other_changes(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("KILN_WORKDIR", str(tmp_path))
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    cfg = '["tracking.backend=none", "train.max_steps=9"]'
    base = prepare_run(RunParams(overrides=cfg))
    other_training = prepare_run(RunParams(overrides=cfg.replace("max_steps=9", "max_steps=500")))
    assert other_training.ingest_config == base.ingest_config
    assert other_training.tokenize_config == base.tokenize_config
    assert other_training.config_json != base.config_json
    other_vocab = prepare_run(
        RunParams(overrides=cfg.replace("]", ', "tokenizer.vocab_size=512"]'))
    )
    assert other_vocab.ingest_config == base.ingest_config
    assert other_vocab.tokenize_config != base.tokenize_config
    # A section reads back as the full config the step expects, other sections at defaults.
    assert step_config(other_vocab.tokenize_config).tokenizer.vocab_size == 512
    assert set(json.loads(base.ingest_config)) == {"ingest"}
