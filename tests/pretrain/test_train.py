import json
import math

import pytest
import torch
from safetensors.torch import load_file

from kiln.components.common.config import OptimConfig
from kiln.components.pretrain import checkpoint as ckpt
from kiln.components.pretrain import pretrain
from kiln.components.pretrain.optim import guarded_step, lr_at, set_lr
from kiln.components.pretrain.runtime import NonFiniteError, Runtime, read_train_log
from kiln.components.pretrain.train import Trainer


def weights(ckpt_dir):
    return load_file(ckpt_dir / "model.safetensors")


def test_loss_decreases_on_a_tiny_corpus(tokens_dir, tiny_cfg, tmp_path):
    tiny_cfg.train.max_steps = 60
    result = pretrain(tiny_cfg, tokens_dir, tmp_path)
    first = sum(result.losses[s] for s in range(1, 6)) / 5
    last = sum(result.losses[s] for s in range(56, 61)) / 5
    assert last < first - 1.0, (first, last)
    assert result.val_loss is not None and result.val_loss < first
    assert len(result.samples) == len(tiny_cfg.train.sample_prompts)


def resumes_bit_identically(cfg, tokens_dir, tmp_path):
    """Train cfg's 20 steps straight, and again stopped at the step-10 checkpoint and resumed
    from a fresh process state; assert both give the same losses and weights, bit for bit, and
    return the straight run."""
    straight = pretrain(cfg, tokens_dir, tmp_path / "straight")
    cfg.train.stop_after_steps = 10  # stop at the first checkpoint, as if interrupted ...
    pretrain(cfg, tokens_dir, tmp_path / "resumed")
    cfg.train.stop_after_steps = 0  # ... then continue from a fresh process state
    resumed = pretrain(cfg, tokens_dir, tmp_path / "resumed", resume=True)
    assert resumed.losses.keys() == set(range(11, 21))
    assert read_train_log(tmp_path / "resumed") == straight.losses  # every step, bit for bit
    a = weights(tmp_path / "straight/checkpoints/step_20")
    b = weights(tmp_path / "resumed/checkpoints/step_20")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return straight


def test_exact_resume_is_bit_identical(tokens_dir, tiny_cfg, tmp_path):
    resumes_bit_identically(tiny_cfg, tokens_dir, tmp_path)


def test_existing_run_is_not_overwritten_without_resume(tokens_dir, tiny_cfg, tmp_path):
    tiny_cfg.train.max_steps = 10
    pretrain(tiny_cfg, tokens_dir, tmp_path)
    with pytest.raises(ValueError, match="pass --resume"):
        pretrain(tiny_cfg, tokens_dir, tmp_path)


def test_gradient_accumulation_matches_a_bigger_batch(tokens_dir, tiny_cfg, tmp_path):
    tiny_cfg.train.max_steps = 5
    tiny_cfg.train.micro_batch_size = 8
    big = pretrain(tiny_cfg, tokens_dir, tmp_path / "big")
    tiny_cfg.train.micro_batch_size = 4
    tiny_cfg.train.tokens_per_step = 8 * tiny_cfg.data.seq_len
    accum = pretrain(tiny_cfg, tokens_dir, tmp_path / "accum")
    for step in big.losses:
        assert math.isclose(big.losses[step], accum.losses[step], rel_tol=1e-4)


def test_checkpoints_are_complete_pruned_and_loadable_without_pickle(
    tokens_dir, tiny_cfg, tmp_path
):
    tiny_cfg.train.ckpt_every = 4
    tiny_cfg.train.keep_checkpoints = 2
    pretrain(tiny_cfg, tokens_dir, tmp_path)
    kept = ckpt.list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in kept] == ["step_16", "step_20"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    parts = ckpt.read_checkpoint(kept[-1])
    assert parts["trainer_state"]["step"] == 20 and parts["config"]["train"]["max_steps"] == 20
    assert set(parts["optim"]["state"]) >= {"embed_tokens.weight", "norm.weight"}
    # A failed write leaves nothing that looks like a checkpoint.
    with pytest.raises(RuntimeError):
        ckpt.save_atomic(
            tmp_path / "checkpoints",
            99,
            lambda d: (d.mkdir(), (_ for _ in ()).throw(RuntimeError("disk full"))),
        )
    assert ckpt.latest_checkpoint(tmp_path / "checkpoints").name == "step_20"


def test_nonfinite_gradients_skip_the_step_and_leave_state_untouched(
    tokens_dir, tiny_cfg, tmp_path
):
    trainer = Trainer(tiny_cfg, tokens_dir, Runtime(tmp_path))
    trainer.train_step()  # populate optimizer state
    before_w = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    before_o = json.dumps(
        {
            k: v["exp_avg"].sum().item()
            for k, v in trainer.optimizers[0].state_dict()["state"].items()
        }
    )
    x, y = trainer.loader.next_batch()
    loss = trainer.loss(x, y)
    loss.backward()
    trainer.model.norm.weight.grad[0] = float("nan")
    _, stepped = guarded_step(trainer.model, trainer.optimizers, 1.0, loss.detach())
    assert not stepped
    assert all(torch.equal(before_w[k], v) for k, v in trainer.model.state_dict().items())
    after_o = json.dumps(
        {
            k: v["exp_avg"].sum().item()
            for k, v in trainer.optimizers[0].state_dict()["state"].items()
        }
    )
    assert before_o == after_o
    assert all(p.grad is None for p in trainer.model.parameters())


def test_training_halts_after_too_many_nonfinite_steps(tokens_dir, tiny_cfg, tmp_path):
    tiny_cfg.train.max_nonfinite_in_a_row = 3
    trainer = Trainer(tiny_cfg, tokens_dir, Runtime(tmp_path))
    with torch.no_grad():
        trainer.model.norm.weight.fill_(float("inf"))
    with pytest.raises(NonFiniteError, match="3 consecutive steps"):
        trainer.fit()
    assert trainer.skipped == 3


def test_loss_spike_rolls_back_and_skips_the_window(tokens_dir, tiny_cfg, tmp_path):
    tiny_cfg.train.spike_factor = 1.5
    tiny_cfg.train.ckpt_every = 8
    trainer = Trainer(tiny_cfg, tokens_dir, Runtime(tmp_path))
    original = trainer.train_step

    def spiky():
        loss, norm, stepped = original()
        return (loss * 10 if trainer.step == 12 and trainer.rollbacks == 0 else loss), norm, stepped

    trainer.train_step = spiky
    result = trainer.fit()
    assert result.rollbacks == 1 and result.step == tiny_cfg.train.max_steps
    assert (
        trainer.loader.state_dict()
        != Trainer(tiny_cfg, tokens_dir, Runtime(tmp_path / "x")).loader.state_dict()
    )


def test_lr_schedules():
    cfg = OptimConfig(lr=1.0, min_lr_ratio=0.1, warmup_steps=10)
    assert lr_at(0, 100, cfg) == pytest.approx(0.1) and lr_at(9, 100, cfg) == pytest.approx(1.0)
    assert lr_at(99, 100, cfg) == pytest.approx(0.1, abs=1e-3)
    assert lr_at(55, 100, cfg) == pytest.approx(0.55)
    cfg.schedule = "constant"
    assert lr_at(99, 100, cfg) == 1.0
    cfg.schedule, cfg.wsd_decay_frac = "wsd", 0.2
    assert lr_at(79, 100, cfg) == 1.0 and lr_at(100, 100, cfg) == pytest.approx(0.1)
    assert 0.1 < lr_at(90, 100, cfg) < 1.0


def test_activation_checkpointing_trains_identically(tokens_dir, tiny_cfg, tmp_path):
    tiny_cfg.train.max_steps, tiny_cfg.train.eval_every, tiny_cfg.train.sample_tokens = 6, 0, 0
    plain = pretrain(tiny_cfg, tokens_dir, tmp_path / "plain")
    assert plain.samples == []  # sample_tokens=0: no prompt-only "samples"
    tiny_cfg.train.activation_checkpointing = True
    recomputed = pretrain(tiny_cfg, tokens_dir, tmp_path / "ckpt")
    assert recomputed.losses == plain.losses


def test_muon_trains_resumes_bit_identically_and_refuses_fsdp(tokens_dir, tiny_cfg, tmp_path):
    from kiln.components.common.config import load_config
    from kiln.components.pretrain.optim import muon_params

    tiny_cfg.optim.name, tiny_cfg.train.max_steps = "muon", 20
    trainer = Trainer(tiny_cfg, tokens_dir, Runtime(tmp_path / "groups"))
    muon, adamw = trainer.optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    hidden = {id(p) for n, p in trainer.model.named_parameters() if n in muon_params(trainer.model)}
    assert {id(p) for g in muon.param_groups for p in g["params"]} == hidden
    assert all(
        n.startswith("layers.") and n.endswith("proj.weight") for n in muon_params(trainer.model)
    )
    straight = resumes_bit_identically(tiny_cfg, tokens_dir, tmp_path)  # momentum restored
    assert straight.losses[20] < straight.losses[1] - 0.3  # it learns (20 steps, dim 32)
    with pytest.raises(ValueError, match="optim.name must be adamw with dist.strategy=fsdp"):
        load_config("tiny", overrides=["optim.name=muon", "dist.strategy=fsdp"])


def test_embedding_lr_is_a_group_of_its_own_on_the_schedule_and_resumes(
    tokens_dir, tiny_cfg, tmp_path
):
    o = tiny_cfg.optim
    o.embedding_lr, tiny_cfg.train.max_steps = 10 * o.lr, 20
    for name in ("adamw", "muon"):
        o.name = name
        trainer = Trainer(tiny_cfg, tokens_dir, Runtime(tmp_path / name))
        adamw = trainer.optimizers[-1]
        (own,) = [g for g in adamw.param_groups if g.get("role") == "embedding"]
        assert own["params"] == [trainer.model.embed_tokens.weight]
        assert all(own["params"][0] is not p for g in adamw.param_groups[:2] for p in g["params"])
        set_lr(trainer.optimizers, 0.5 * o.lr, o)  # the schedule halves every peak alike
        assert own["lr"] == pytest.approx(0.5 * o.embedding_lr)
        assert adamw.param_groups[0]["lr"] == pytest.approx(0.5 * o.lr)
    o.name = "adamw"
    straight = resumes_bit_identically(tiny_cfg, tokens_dir, tmp_path)
    o.embedding_lr = 0.0  # and the faster embedding changes the run
    assert pretrain(tiny_cfg, tokens_dir, tmp_path / "plain").losses[20] != straight.losses[20]


def test_steps_that_fit_count_validations_and_never_lengthen():
    from kiln.components.pretrain.train import steps_that_fit

    assert steps_that_fit(10, 0.1, 10.0, 0.5, 0, 1000) == 10 + 95  # the final validation
    assert steps_that_fit(10, 0.1, 10.0, 0.5, 10, 1000) == 10 + 63  # and one every 10 steps
    assert steps_that_fit(10, 0.1, 10.0, 0.5, 0, 50) == 50  # never past max_steps
    assert steps_that_fit(10, 0.1, 0.3, 0.5, 0, 1000) == 10  # no time left: stop now


def test_the_second_fit_comes_where_the_schedule_allows():
    from kiln.components.common.config import OptimConfig
    from kiln.components.pretrain.train import refit_step

    wsd = OptimConfig(schedule="wsd", warmup_steps=10, wsd_decay_frac=0.4)
    assert refit_step(10, 1000, wsd) == 599  # the step before the decay starts
    cosine = OptimConfig(schedule="cosine", warmup_steps=10)
    assert refit_step(10, 1000, cosine) == 505  # halfway through the rest


@pytest.mark.parametrize("schedule", ["cosine", "wsd"])
def test_fit_to_time_limit_ends_the_schedule_in_time(schedule, tokens_dir, tiny_cfg, tmp_path):
    import time

    from kiln.components.pretrain.train import process_start
    from kiln.components.pretrain.train_log import TRAIN_LOG, read_records

    t, o = tiny_cfg.train, tiny_cfg.optim
    t.max_steps, t.ckpt_every, t.fit_to_time_limit = 100_000, 100_000, True
    o.schedule = schedule  # wsd fits again where its decay starts
    t.time_limit_s = time.time() - process_start() + 4.0  # ~4 s of training from now
    start = time.time()
    result = pretrain(tiny_cfg, tokens_dir, tmp_path)
    assert time.time() - start < 4.0 + 10
    assert 10 < result.step < 100_000
    last = read_records(tmp_path / TRAIN_LOG)[-1]["lr"]
    floor = o.lr * o.min_lr_ratio
    assert last <= floor + 0.1 * (o.lr - floor)  # decayed: the schedule ended, not the clock
    state = ckpt.read_checkpoint(result.checkpoint)["trainer_state"]
    fitted = state["fitted_max_steps"]
    assert result.step <= fitted < 100_000
    t.time_limit_s, t.fit_to_time_limit = 0.0, False  # resuming keeps the fitted length
    assert pretrain(tiny_cfg, tokens_dir, tmp_path, resume=True).step == fitted


def test_time_limit_stops_early_with_a_final_checkpoint(tokens_dir, tiny_cfg, tmp_path):
    import time

    from kiln.components.pretrain.train import process_start

    tiny_cfg.train.max_steps, tiny_cfg.train.ckpt_every = 100_000, 100_000
    # The limit counts from this process's start (pytest's, here): leave ~1.5 s of training.
    tiny_cfg.train.time_limit_s = time.time() - process_start() + 1.5
    start = time.time()
    result = pretrain(tiny_cfg, tokens_dir, tmp_path)
    assert 0 < result.step < 100_000
    assert result.checkpoint.endswith(f"step_{result.step}")  # saved where it stopped
    assert result.val_loss is not None  # the final validation ran
    assert time.time() - start < 1.5 + 10  # generous: one step and the final save, not a run


def test_a_run_that_rereads_its_data_many_times_is_warned(tokens_dir, tiny_cfg, tmp_path, caplog):
    from kiln.components.pretrain.train import MANY_PASSES

    def warnings_for(max_steps: int, **train) -> tuple[list[str], Trainer]:
        caplog.clear()
        tiny_cfg.train.max_steps = max_steps
        for key, value in train.items():
            setattr(tiny_cfg.train, key, value)
        with caplog.at_level("WARNING", logger="kiln.train"):
            trainer = Trainer(tiny_cfg, tokens_dir, Runtime(tmp_path / f"run{len(train)}"))
        return [r.getMessage() for r in caplog.records if "times" in r.getMessage()], trainer

    _, trainer = warnings_for(1)
    per_pass = trainer.loader.windows * tiny_cfg.data.seq_len
    steps = MANY_PASSES * per_pass // trainer.tokens_per_step  # at most MANY_PASSES passes
    assert warnings_for(steps)[0] == []
    (warned,), _ = warnings_for(2 * steps + 2)
    passes = (2 * steps + 2) * trainer.tokens_per_step / per_pass
    assert passes > MANY_PASSES
    assert f"reads its {per_pass:,} training tokens {passes:.0f} times" in warned
    assert "more text" in warned
    # Fitted to a time limit, the steps are not known yet: nothing to say.
    assert warnings_for(2 * steps, time_limit_s=60.0, fit_to_time_limit=True)[0] == []


def test_gpt2_124m_architecture_trains_compiled_in_bf16_with_muon(tokens_dir, tiny_cfg, tmp_path):
    """`gpt2-124m`'s architecture (tied embeddings, full multi-head attention) at test size,
    with Muon, under `torch.compile` in bf16 autocast (what the preset runs on a GPU): it trains
    as the eager model does, and its checkpoint keeps plain parameter names."""
    from kiln.components.common.config import load_config

    shipped = load_config("gpt2-124m", overrides=["optim.name=muon"])
    assert shipped.train.compile and shipped.train.dtype == "bf16"
    assert shipped.model.tie_embeddings and shipped.model.n_kv_heads == shipped.model.n_heads
    tiny_cfg.model.tie_embeddings, tiny_cfg.model.n_kv_heads = True, tiny_cfg.model.n_heads
    tiny_cfg.optim.name, tiny_cfg.train.dtype = "muon", "bf16"
    tiny_cfg.train.max_steps, tiny_cfg.train.eval_every, tiny_cfg.train.sample_tokens = 8, 0, 0
    eager = pretrain(tiny_cfg, tokens_dir, tmp_path / "eager")
    tiny_cfg.train.compile = True
    compiled = pretrain(tiny_cfg, tokens_dir, tmp_path / "compiled")
    assert compiled.losses.keys() == eager.losses.keys()
    for step, loss in eager.losses.items():  # bf16: fused kernels round differently, no more
        assert compiled.losses[step] == pytest.approx(loss, rel=1e-3), step
    assert compiled.losses[8] < compiled.losses[1]
    assert (
        weights(tmp_path / "eager/checkpoints/step_8").keys()
        == weights(tmp_path / "compiled/checkpoints/step_8").keys()
    )
