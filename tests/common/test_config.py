"""The config explains itself: typed fields, checked on construction and after merging, with
errors naming the dotted key; run parameters defined once; derived values never written back."""

import argparse
import dataclasses
import inspect
import json
import typing
from pathlib import Path

import numpy as np
import pytest

from kiln.components.common.config import (
    Config,
    OptimConfig,
    RunParams,
    apply_override,
    describe_fields,
    from_dict,
    load_config,
    preset,
    with_changes,
)
from kiln.components.common.config.data import FilterConfig, TokenizerConfig
from kiln.components.common.config.fields import Section, choices, field_types


def test_presets_build_and_validate():
    for name in ["tiny", "mini", "small", "gpt2-124m", "1b"]:
        cfg = load_config(name)
        assert cfg.model.dim % cfg.model.n_heads == 0


def test_overrides_are_typed():
    cfg = load_config(
        "tiny", overrides=["train.max_steps=7", "optim.lr=0.5", "model.tie_embeddings=true"]
    )
    assert cfg.train.max_steps == 7 and isinstance(cfg.train.max_steps, int)
    assert cfg.optim.lr == 0.5
    assert cfg.model.tie_embeddings is True


def test_bad_overrides_name_the_problem():
    cfg = preset("tiny")
    with pytest.raises(ValueError, match="unknown config key 'train.max_stepz'"):
        apply_override(cfg, "train.max_stepz=3")
    with pytest.raises(ValueError, match=r"train.max_steps must be a number \(int\), got 'lots'"):
        apply_override(cfg, "train.max_steps=lots")
    with pytest.raises(ValueError, match="train.max_steps must be a number"):
        apply_override(cfg, "train.max_steps=2.5")  # not silently truncated to 2
    with pytest.raises(ValueError, match="section.key=value"):
        apply_override(cfg, "train.max_steps")


def test_file_then_overrides(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('preset = "small"\n[train]\nmax_steps = 11\n[optim]\nlr = 0.01\n')
    cfg = load_config(file=toml, overrides=["optim.lr=0.02"])
    assert cfg.model.dim == preset("small").model.dim
    assert cfg.train.max_steps == 11 and cfg.optim.lr == 0.02
    yaml = tmp_path / "run.yaml"
    yaml.write_text("train:\n  max_steps: 5\n")
    assert load_config("tiny", yaml).train.max_steps == 5


def test_a_bad_value_in_a_file_names_the_file_and_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  schedule: linear\n")
    with pytest.raises(ValueError, match=r"bad.yaml: optim.schedule must be one of cosine"):
        load_config("tiny", bad)


def test_cross_field_validation():
    with pytest.raises(ValueError, match="divisible"):
        load_config("tiny", overrides=["model.n_heads=3"])
    with pytest.raises(ValueError, match="data.seq_len must be <= model.max_seq_len=128"):
        load_config("tiny", overrides=["data.seq_len=256"])
    with pytest.raises(ValueError, match="train.tokens_per_step must be 0 or a multiple"):
        load_config("tiny", overrides=["train.tokens_per_step=1000"])


def test_validation_runs_once_every_override_is_in():
    # data.seq_len=256 alone exceeds tiny's max_seq_len; the next override makes it valid.
    cfg = load_config("tiny", overrides=["data.seq_len=256", "model.max_seq_len=256"])
    assert cfg.data.seq_len == cfg.model.max_seq_len == 256


def test_round_trip_and_field_reference():
    cfg = load_config("gpt2-124m")
    assert from_dict(cfg.to_dict()) == cfg
    keys = {k for k, _, _ in describe_fields()}
    assert "train.max_steps" in keys and all(h for _, _, h in describe_fields())


# A bad value for (at least) one field of every section, and the error that names it.
BAD_VALUES = [
    ("model.vocab_size=0", "model.vocab_size must be >= 1, got 0"),
    ("model.n_kv_heads=3", "model.n_heads must be a multiple of model.n_kv_heads=3, got 4"),
    ("model.rope_theta=-1", "model.rope_theta must be > 0, got -1.0"),
    ("model.norm_eps=nan", "model.norm_eps must be a finite number, got nan"),
    ("data.seq_len=0", "data.seq_len must be >= 1, got 0"),
    ("optim.lr=-0.001", "optim.lr must be > 0, got -0.001"),
    ("optim.beta2=1", "optim.beta2 must be < 1, got 1.0"),
    ("optim.min_lr_ratio=1.5", "optim.min_lr_ratio must be <= 1, got 1.5"),
    ("optim.schedule=linear", "optim.schedule must be one of cosine, constant, wsd, got 'linear'"),
    ("train.max_steps=0", "train.max_steps must be >= 1, got 0"),
    ("train.dtype=fp16", "train.dtype must be one of auto, bf16, fp32, got 'fp16'"),
    ("train.log_every=0", "train.log_every must be >= 1, got 0"),
    ("train.spike_factor=0.5", "train.spike_factor must be 0 (off) or > 1"),
    ("train.fit_to_time_limit=true", "train.time_limit_s must be > 0 with train.fit_to_time_limit"),
    ("train.sample_prompts=[1]", None),  # coerced to the string "1": fine
    ("dist.workers=-2", "dist.workers must be >= 0, got -2"),
    ("dist.strategy=zero3", "dist.strategy must be one of ddp, fsdp, got 'zero3'"),
    ("dist.use_gpu=maybe", "dist.use_gpu must be true or false, got 'maybe'"),
    ("tokenizer.engine=fast", "tokenizer.engine must be one of auto, tiktoken, hf, got 'fast'"),
    ("tokenizer.workers=0", "tokenizer.workers must be >= 1, got 0"),
    ("tokenizer.vocab_size=200", "tokenizer.vocab_size must be >= 265 (too small"),
    ("ingest.on_bad_utf8=drop", "ingest.on_bad_utf8 must be one of replace, skip, got 'drop'"),
    ("ingest.val_fraction=1", "ingest.val_fraction must be < 1, got 1.0"),
    ('ingest.source_weights={"web": -1}', "ingest.source_weights.web must be >= 0, got -1.0"),
    ("ingest.filters.max_bullet_lines=2", "ingest.filters.max_bullet_lines must be <= 1, got 2.0"),
    ("ingest.filters.min_chars=20000000", "ingest.filters.min_chars must be <= ingest.filters"),
    (
        "ingest.filters.max_top_ngram_frac=[0.2,1.5]",
        "ingest.filters.max_top_ngram_frac[1] must be <= 1, got 1.5",
    ),
    ("ingest.dedup.threshold=1.2", "ingest.dedup.threshold must be <= 1, got 1.2"),
    ("ingest.dedup.bands=0", "ingest.dedup.bands must be >= 1, got 0"),
    ("storage.part_size_mb=4", "storage.part_size_mb must be >= 5, got 4"),
    ("storage.endpoint=minio:9000", "storage.endpoint must be '' or an http"),
    ("tracking.backend=wandb", "tracking.backend must be one of mlflow, file, none, got 'wandb'"),
    ("tracking.model_name=a/b", "tracking.model_name must be a registry name"),
    ("eval.device=tpu", "eval.device must be one of auto, cpu, cuda, got 'tpu'"),
    ("eval.batch_size=0", "eval.batch_size must be >= 1, got 0"),
    ("eval.temperature=-1", "eval.temperature must be >= 0, got -1.0"),
    (
        "publish.upload_checkpoints=some",
        "publish.upload_checkpoints must be one of none, latest, all, got 'some'",
    ),
    ("publish.promote=perhaps", "publish.promote must be true or false, got 'perhaps'"),
    ("publish.serving_gpus=-1", "publish.serving_gpus must be >= 0, got -1"),
    ("publish.serving_memory=lots", "publish.serving_memory must be a Kubernetes quantity"),
    ("publish.serving_name=My_Model", "publish.serving_name must be '' or a Kubernetes name"),
    (
        "publish.model_registry_url=https://mr.example.com/api",
        "publish.model_registry_url must be '' or http(s)://HOST[:PORT] without a path",
    ),
    ("publish.model_registry_url=http://127.0.0.1:8080/", None),
    (
        "publish.model_registry_storage_key=My_Connection",
        "publish.model_registry_storage_key must be '' or a Kubernetes Secret name",
    ),
]


@pytest.mark.parametrize("override, message", BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_every_section_rejects_a_bad_value_naming_the_key(override, message):
    if message is None:
        load_config("tiny", overrides=[override])
        return
    with pytest.raises(ValueError) as err:
        load_config("tiny", overrides=[override])
    assert message in str(err.value)


def _leaf_fields(cls, prefix=""):
    types_ = field_types(cls)
    for f in dataclasses.fields(cls):
        typ = types_[f.name]
        if isinstance(typ, type) and issubclass(typ, Section):
            yield from _leaf_fields(typ, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", typ, f


def test_every_literal_choice_field_lists_its_choices():
    literal = [(key, choices(typ)) for key, typ, _ in _leaf_fields(Config) if choices(typ)]
    assert {k for k, _ in literal} >= {"tokenizer.engine", "publish.upload_checkpoints"}
    for key, allowed in literal:
        with pytest.raises(ValueError, match=f"{key} must be one of {', '.join(allowed)}"):
            load_config("tiny", overrides=[f"{key}=not-a-choice"])


def test_every_number_has_limits_unless_any_value_is_meaningful():
    unbounded = {"eval.baseline_margin"}  # negative tolerates a regression: any value works
    for key, typ, f in _leaf_fields(Config):
        numeric = typ in (int, float) or typing.get_args(typ) in ((float,), (str, float))
        if numeric and key not in unbounded:
            assert f.metadata["limits"], f"{key} declares no limits"


def test_sections_check_themselves_when_built_directly():
    with pytest.raises(ValueError, match=r"^optim.lr must be > 0, got -0.001$"):
        OptimConfig(lr=-0.001)
    with pytest.raises(ValueError, match="ingest.filters.min_words must be >= 0, got -1"):
        FilterConfig(min_words=-1)
    with pytest.raises(ValueError, match="too small"):
        TokenizerConfig(vocab_size=100)


def test_saved_configs_are_validated_and_old_ones_migrate():
    data = load_config("tiny").to_dict()
    data["optim"]["lr"] = -1
    with pytest.raises(ValueError, match="optim.lr must be > 0"):
        from_dict(data)
    old = load_config("tiny").to_dict()
    old["publish"]["model_name"] = "from-publish"  # a checkpoint saved before the merge
    assert from_dict(old).tracking.model_name == "from-publish"


def test_publish_model_name_is_gone_with_a_pointer_to_its_replacement(tmp_path):
    with pytest.raises(ValueError, match="'publish.model_name' was removed: set 'tracking.model"):
        load_config("tiny", overrides=["publish.model_name=m"])
    file = tmp_path / "old.toml"
    file.write_text('[publish]\nmodel_name = "m"\n')
    with pytest.raises(ValueError, match="old.toml: config key 'publish.model_name' was removed"):
        load_config(file=file)
    assert not hasattr(Config().publish, "model_name")


def test_with_changes_returns_a_checked_copy():
    cfg = load_config("tiny")
    job = with_changes(cfg, {"dist.workers": 2, "dist.ray_address": ""})
    assert job.dist.workers == 2 and cfg.dist.workers == 0
    with pytest.raises(ValueError, match="dist.workers must be >= 0"):
        with_changes(cfg, {"dist.workers": -3})


# ------------------------------------------------------------------------ kiln config --fields
def test_config_fields_shows_the_resolved_values_not_the_defaults(capsys):
    from kiln.pipelines.cli import main

    code = main(["config", "--preset", "small", "--set", "train.max_steps=77", "--fields"])
    assert code == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    assert rows["model.dim"] == "384"  # the small preset's, not the default 128
    assert rows["train.max_steps"] == "77"  # --set
    assert rows["tokenizer.engine"] == '"auto"'
    assert set(rows) == {key for key, _, _ in describe_fields()}


# ---------------------------------------------------------------------- derived values stay out
def test_the_vocabulary_from_the_tokenizer_is_not_written_back(tmp_path):
    """Training sizes the model from the manifest; `cfg` keeps the user's value, and the
    checkpoint (hence the exported Hugging Face config) records the model actually built."""
    from kiln.components.pretrain.export import export_checkpoint
    from kiln.components.pretrain.placement import model_shape
    from kiln.components.pretrain.train import pretrain
    from kiln.components.tokenization.manifest import Manifest, ShardEntry, write_manifest
    from kiln.components.tokenization.shards import write_shard

    vocab = 300
    ids = np.random.default_rng(0).integers(0, vocab, 20_000)
    splits = {}
    for split, part in [("train", ids[:18_000]), ("val", ids[18_000:])]:
        (tmp_path / "tok" / split).mkdir(parents=True)
        sha = write_shard(tmp_path / "tok" / split / "000000.bin", part, vocab_size=vocab)
        splits[split] = [ShardEntry(file=f"{split}/000000.bin", tokens=len(part), sha256=sha)]
    write_manifest(tmp_path / "tok", Manifest(vocab, "uint16", eot_id=0, splits=splits))

    cfg = load_config(
        "tiny",
        overrides=[
            "model.dim=32",
            "data.seq_len=16",
            "train.micro_batch_size=2",
            "train.max_steps=2",
            "train.ckpt_every=2",
            "tracking.backend=none",
        ],
    )
    before = cfg.to_dict()
    assert model_shape(cfg.model, tmp_path / "tok").vocab_size == 304  # padded to 8
    result = pretrain(cfg, tmp_path / "tok", tmp_path / "out")
    assert cfg.to_dict() == before and cfg.model.vocab_size == 4096
    saved = json.loads((Path(result.checkpoint) / "config.json").read_text())
    assert saved["model"]["vocab_size"] == 304
    model_dir = export_checkpoint(result.checkpoint, tmp_path / "model")
    assert json.loads((model_dir / "config.json").read_text())["vocab_size"] == 304


# -------------------------------------------------------------------------- run parameters
def _signature_defaults(func) -> dict:
    return {name: p.default for name, p in inspect.signature(func).parameters.items()}


def test_run_params_are_the_pipeline_and_prepare_parameters():
    """KFP needs literal Python parameters: they must stay RunParams' fields and defaults."""
    from kiln.components.common.component import prepare
    from kiln.pipelines.pretrain import build_pipeline

    expected = RunParams().pipeline_arguments()
    pipeline = _signature_defaults(build_pipeline().pipeline_func)
    stage_only = {"corpus_uri", "baseline_model"}
    assert {k: v for k, v in pipeline.items() if k not in stage_only} == expected
    prepare_params = set(_signature_defaults(prepare.python_func)) - {"pipeline_run_id"}
    assert prepare_params == set(expected)
    types_ = {f.name: f.type for f in dataclasses.fields(RunParams)}
    for name, p in inspect.signature(prepare.python_func).parameters.items():
        if name in types_ and name != "overrides":  # a JSON string in KFP, a list here
            assert p.annotation.__name__ == types_[name], name


def test_cli_options_come_from_run_params():
    parser = argparse.ArgumentParser()
    RunParams.add_arguments(parser, RunParams(workers=1))
    args = parser.parse_args(["--set", "train.max_steps=5", "--model-name", "m", "--run-id", "r"])
    params = RunParams.from_args(args)
    assert params == RunParams(
        overrides=["train.max_steps=5"], model_name="m", run_id="r", workers=1
    )
    assert set(vars(args)) == {f.name for f in dataclasses.fields(RunParams)}
    help_text = parser.format_help()
    assert "tracking.model_name" in help_text and "(default: 1)" in help_text
    with pytest.raises(ValueError, match="preset must be one of"):
        RunParams(preset="huge")
