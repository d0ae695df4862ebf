import pytest

from kiln.components.common.config import (
    apply_override,
    describe_fields,
    from_dict,
    load_config,
    preset,
)


def test_presets_build_and_validate():
    for name in ["tiny", "small", "gpt2-124m", "1b"]:
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
    with pytest.raises(ValueError, match="train.max_steps: expected int"):
        apply_override(cfg, "train.max_steps=lots")
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


def test_cross_field_validation():
    with pytest.raises(ValueError, match="divisible"):
        load_config("tiny", overrides=["model.n_heads=3"])


def test_round_trip_and_field_reference():
    cfg = load_config("gpt2-124m")
    assert from_dict(cfg.to_dict()) == cfg
    keys = {k for k, _, _ in describe_fields()}
    assert "train.max_steps" in keys and all(h for _, _, h in describe_fields())
