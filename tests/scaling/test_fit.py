"""Scaling-law fits recover the exponents of a known L(N, D) from an isoFLOP grid of runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kiln.components.scaling.fit import ParametricFit, Run, fit, fit_isoflop

# Hoffmann et al. 2022's fitted surface: N* ∝ C^(β/(α+β)) = C^0.4516, D* ∝ C^0.5484.
TRUE = ParametricFit(
    n_exponent=0.28 / 0.62, d_exponent=0.34 / 0.62, n_interval=(0, 0), d_interval=(0, 0),
    E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28,
)  # fmt: skip


def isoflop_grid(budgets, sizes_per_budget=7, noise=0.002, seed=0) -> list[Run]:
    """Runs on an isoFLOP grid around each budget's true optimum, loss with relative noise."""
    rng = np.random.default_rng(seed)
    runs = []
    for c in budgets:
        n_opt, _ = TRUE.optimal(c)
        for n in n_opt * np.logspace(-1, 1, sizes_per_budget):
            d = c / (6 * n)
            runs.append(Run(c, n, d, TRUE.loss(n, d) * math.exp(noise * rng.standard_normal())))
    return runs


def test_both_approaches_recover_the_known_exponents_within_10_percent():
    runs = isoflop_grid([1e17, 1e18, 1e19, 1e20])
    report = fit(runs, target_flops=1e21, bootstrap=40)
    for approach in (report.isoflop, report.parametric):
        assert approach.n_exponent == pytest.approx(TRUE.n_exponent, rel=0.1)
        assert approach.d_exponent == pytest.approx(TRUE.d_exponent, rel=0.1)
        lo, hi = approach.n_interval
        assert lo <= approach.n_exponent <= hi and hi - lo < 0.2
    n_true, d_true = TRUE.optimal(1e21)
    assert report.target["parametric"]["params"] == pytest.approx(n_true, rel=0.25)
    assert report.target["parametric"]["loss"] == pytest.approx(TRUE.loss(n_true, d_true), rel=0.01)
    assert report.to_dict()["isoflop"]["minima"][0]["flops"] == 1e17


def test_unusable_sweeps_are_clear_errors():
    with pytest.raises(ValueError, match="2 or more compute budgets"):
        fit_isoflop(isoflop_grid([1e18]))
    two_sizes = [r for r in isoflop_grid([1e17, 1e18], sizes_per_budget=2)]
    with pytest.raises(ValueError, match="at least 3 model sizes"):
        fit_isoflop(two_sizes)
    # Sizes all far below the optimum: the loss still falls at the largest one.
    low = [
        Run(c, n, c / (6 * n), TRUE.loss(n, c / (6 * n)))
        for c in (1e17, 1e18)
        for n in TRUE.optimal(c)[0] * np.array([1e-3, 1e-2, 1e-1])
    ]
    with pytest.raises(ValueError, match="lies outside the sizes tried"):
        fit_isoflop(low)


def test_kiln_plan_sizes_a_budget_from_a_sweep_report_or_chinchilla(tmp_path, capsys):
    import json

    from kiln.pipelines.cli import main

    report = fit(isoflop_grid([1e17, 1e18, 1e19, 1e20]), bootstrap=10)
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"fit": report.to_dict()}))
    args = ["plan", "--preset", "small", "--budget", "1e21", "--json"]
    assert main([*args, "--from-sweep", str(sweep)]) == 0
    plan = json.loads(capsys.readouterr().out)
    n_true, d_true = TRUE.optimal(1e21)
    rec = plan["recommendation"]
    assert rec["params"] == pytest.approx(n_true, rel=0.25)
    assert rec["tokens"] == pytest.approx(d_true, rel=0.25)
    assert "model.n_layers=" in " ".join(rec["overrides"])
    assert 0.5 < plan["params"]["total"] / rec["params"] < 2  # the nearest depth of the family
    assert plan["train_tokens"] == int(rec["tokens"])

    assert main(args) == 0  # no sweep: Chinchilla's ratio, said so
    captured = capsys.readouterr()
    assert "Chinchilla's published 20 tokens per parameter" in captured.err
    rec = json.loads(captured.out)["recommendation"]
    assert rec["tokens"] == pytest.approx(20 * rec["params"])
    assert rec["params"] * rec["tokens"] * 6 == pytest.approx(1e21)

    assert main(["plan", "--preset", "small", "--budget", "1e21", "--from-sweep", str(sweep)]) == 0
    assert (
        "train it with: kiln train --tokens DIR --output DIR --preset small --set model.dim="
        in (capsys.readouterr().out)
    )

    sweep.write_text("{}")
    assert main([*args, "--from-sweep", str(sweep)]) == 2
    assert "not a sweep report with a fit" in capsys.readouterr().err
    assert main(["plan", "--from-sweep", str(sweep)]) == 2
    assert "--from-sweep needs --budget" in capsys.readouterr().err


def test_kiln_plan_writes_the_recommended_config_for_kiln_train(tmp_path, capsys):
    from kiln.components.common.config import load_config
    from kiln.pipelines.cli import main

    for name in ("plan.json", "plan.yaml"):
        out = tmp_path / name
        args = ["plan", "--preset", "small", "--budget", "1e18", "--write-config", str(out)]
        assert main(args) == 0
        assert f"--config {out}" in capsys.readouterr().out
        cfg = load_config(file=out)  # what `kiln train --config` reads
        assert cfg.model.n_layers == 12 and cfg.model.dim == 768  # Chinchilla's 91M for 1e18
        assert cfg.train.max_steps * cfg.train.micro_batch_size * cfg.data.seq_len == (
            pytest.approx(20 * 91.3e6, rel=0.01)
        )
    assert main(["plan", "--write-config", str(tmp_path / "x.json")]) == 2
    assert "--write-config needs --budget" in capsys.readouterr().err
