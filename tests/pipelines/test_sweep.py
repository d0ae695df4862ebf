"""`kiln sweep`: the kiln-sweep pipeline on the KFP local runner against a real MLflow server.

3 budgets × 3 sizes of tiny models on the built-in corpus: every point is a child MLflow run with
its held-out loss, the fit (finite exponents with intervals) and its plots are logged to the
sweep's run, and `kiln plan --from-sweep RUN` reads them back. Budgets are a few hundred training
steps in all, so the points' losses are noisy: the test checks the machinery, not the exponents
(tests/scaling/test_fit.py checks those against a known surface).
"""

from __future__ import annotations

import json
import math

import pytest

from kiln.components.common.config import RunParams
from kiln.components.common.tracking import mlflow_client
from kiln.pipelines.cli import main
from kiln.pipelines.local import run_sweep_local

BUDGETS = "3e9,6e9,1.2e10"


@pytest.fixture(scope="module")
def sweep(mlflow_server, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sweep")
    params = RunParams(
        preset="tiny",
        overrides=["tokenizer.vocab_size=512", "train.log_every=50"],
        mlflow_uri=mlflow_server,
    )
    result = run_sweep_local(
        params, BUDGETS, sizes=3, target_budget=1e12, workdir=str(workdir), parallel=2
    )
    return result, mlflow_server


def test_every_point_is_a_scored_child_run_of_the_sweep(sweep):
    result, uri = sweep
    runs = result.report["runs"]
    assert len(runs) == 9
    assert sorted({r["budget"] for r in runs}) == [3e9, 6e9, 1.2e10]
    for budget in {r["budget"] for r in runs}:
        sizes = sorted(r["params"] for r in runs if r["budget"] == budget)
        assert len(set(sizes)) == 3
        for r in runs:  # C = 6·N·D up to whole optimizer steps
            if r["budget"] == budget:
                assert r["tokens"] * r["params"] * 6 == pytest.approx(budget, rel=0.5)
    client = mlflow_client(uri)
    parent = client.get_run(result.run_id)
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    assert sorted(c.info.run_id for c in children) == sorted(r["run_id"] for r in runs)
    for child in children:
        assert child.info.status == "FINISHED"
        loss = child.data.metrics["eval/val_loss"]
        point = next(r for r in runs if r["run_id"] == child.info.run_id)
        assert loss == pytest.approx(point["loss"]) and math.isfinite(loss)
        assert float(child.data.params["sweep.params"]) == point["params"]


def test_the_fit_and_its_plots_are_on_the_sweep_run(sweep):
    result, uri = sweep
    fit = result.report["fit"]["parametric"]
    for key in ("n_exponent", "d_exponent"):
        assert math.isfinite(fit[key])
    for key in ("n_interval", "d_interval"):
        lo, hi = fit[key]
        assert math.isfinite(lo) and math.isfinite(hi) and lo <= hi
    assert fit["n_exponent"] + fit["d_exponent"] == pytest.approx(1.0)  # C = 6·N·D
    rec = result.report["recommendation"]
    assert rec["flops"] == 1e12 and rec["params"] > 0 and rec["tokens"] > 0
    for name in ("sweep.json", "isoflop.png", "frontier.png"):
        assert (result.report_dir / name).stat().st_size > 0
    client = mlflow_client(uri)
    logged = {a.path for a in client.list_artifacts(result.run_id, "sweep")}
    assert logged == {"sweep/sweep.json", "sweep/isoflop.png", "sweep/frontier.png"}
    metrics = client.get_run(result.run_id).data.metrics
    assert metrics["sweep/runs"] == 9
    assert metrics["sweep/parametric_n_exponent"] == pytest.approx(fit["n_exponent"])


def test_kiln_plan_reads_the_sweep_from_mlflow(sweep, capsys):
    result, uri = sweep
    args = ["plan", "--preset", "tiny", "--budget", "1e12", "--tracking-uri", uri, "--json"]
    assert main([*args, "--from-sweep", result.run_id]) == 0
    plan = json.loads(capsys.readouterr().out)
    expected = result.report["fit"]["parametric"]
    assert plan["recommendation"]["params"] == pytest.approx(_optimal_n(expected, 1e12), rel=1e-9)
    assert main([*args, "--from-sweep", "0" * 32]) == 2
    assert "neither a sweep.json file nor an MLflow run" in capsys.readouterr().err


def _optimal_n(fit: dict, flops: float) -> float:
    a, b = fit["alpha"], fit["beta"]
    g = (a * fit["A"] / (b * fit["B"])) ** (1 / (a + b))
    return g * (flops / 6) ** (b / (a + b))
