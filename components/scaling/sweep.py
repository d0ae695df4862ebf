"""A scaling-law sweep: an isoFLOP grid of training runs on one dataset, then the fits.

    points = sweep_grid(cfg, tokens_dir, budgets=[1e10, 3e10, 1e11], sizes=3)   # one per run
    result = run_point(tokens_dir, "out/c0-n1", config_json, points[1], parent_run_id)
    report = fit_sweep([result, ...], "out/fit", config_json, parent_run_id, target_flops=1e20)

The grid is the isoFLOP design: for each budget C, `sizes` model shapes of the preset's family
(depth L, width L × the preset's width per layer, the preset's head size; `plan.shape_for_params`)
spread by `spread`× either side of Chinchilla's optimum (distinct depths, at least 1), each trained on D = C / 6N tokens (rounded to whole optimizer steps). N counts the
parameters that cost FLOPs (all but a lookup-only embedding: the MFU meter's N), so C = 6·N·D.
Every run trains with the same loop as `kiln train` (`pretrain_step`, so Ray Train workers or a
Ray job when the config says so) and is scored on the same held-out split by `evaluate_step`,
each in its own MLflow run, a child of the sweep's run. The fit step writes sweep.json (the runs,
both fits, the recommendation for a target budget) and two plots, and logs all three to the
sweep's run under `sweep/`; `kiln plan --from-sweep` reads sweep.json from there.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from kiln.components.common.config import Config, with_changes
from kiln.components.scaling.fit import (
    FitReport,
    Run,
    fit_isoflop,
    fit_parametric,
    isoflop_minimum,
)
from kiln.components.scaling.plan import (
    chinchilla_optimal,
    count_params,
    family,
    shape_for_params,
    tokens_per_step,
)

log = logging.getLogger("kiln.sweep")
SWEEP_JSON = "sweep.json"
ARTIFACT_DIR = "sweep"


def parse_budgets(text: str) -> list[float]:
    """'1e10, 3e10,1e11' -> sorted distinct budgets; ValueError naming a bad one."""
    budgets = set()
    for part in filter(None, (p.strip() for p in text.replace(";", ",").split(","))):
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"budgets: {part!r} is not a number of FLOPs (e.g. 1e12)") from None
        if not value > 0 or not math.isfinite(value):
            raise ValueError(f"budgets: {part!r} must be a positive number of FLOPs")
        budgets.add(value)
    if len(budgets) < 2:
        raise ValueError("budgets: give at least 2 compute budgets (e.g. 1e10,3e10,1e11)")
    return sorted(budgets)


def sweep_grid(
    cfg: Config, vocab_size: int, budgets: list[float], sizes: int = 3, spread: float = 3.0
) -> list[dict[str, Any]]:
    """One point per (budget, size): id, budget, params N, tokens D, steps and the overrides."""
    if sizes < 3:
        raise ValueError(f"sizes: an isoFLOP fit needs at least 3 sizes per budget, got {sizes}")
    if spread <= 1:
        raise ValueError(f"spread must be > 1 (the largest size ÷ the optimum), got {spread}")
    base = dataclasses.replace(cfg.model, vocab_size=vocab_size)
    shapes_of = family(base)  # the preset's head size and width per layer
    per_step = tokens_per_step(cfg)
    points = []
    for i, budget in enumerate(budgets):
        center, _ = chinchilla_optimal(budget)
        depths = [
            shape_for_params(base, center * f, non_embedding=True, **shapes_of).n_layers
            for f in np.geomspace(1 / spread, spread, sizes)
        ]
        for k in range(1, len(depths)):  # distinct depths: a toy budget maps several to one
            depths[k] = max(depths[k], depths[k - 1] + 1)
        shapes = {L: shape_for_params(base, 0, depth=L, **shapes_of) for L in depths}
        for j, shape in enumerate(shapes.values()):
            n = count_params(shape).non_embedding
            steps = max(1, round(budget / (6 * n) / per_step))
            points.append(
                {
                    "id": f"c{i}-n{j}",
                    "budget": budget,
                    "params": n,
                    "tokens": steps * per_step,
                    "steps": steps,
                    "overrides": {
                        "model.dim": shape.dim,
                        "model.n_layers": shape.n_layers,
                        "model.n_heads": shape.n_heads,
                        "model.n_kv_heads": shape.n_kv_heads,
                        "model.ffn_dim": 0,
                        "train.max_steps": steps,
                        "train.eval_every": 0,
                        "train.ckpt_every": steps,
                        "train.sample_tokens": 0,
                        "eval.sample_tokens": 0,
                    },
                }
            )
    return points


def run_point(
    tokens_dir: str, output_dir: str, config_json: str, point: dict, parent_run_id: str = ""
) -> dict[str, Any]:
    """Train and score one grid point in its own MLflow run (a child of the sweep's run)."""
    from kiln.components.common.pipeline_run import step_config, workdir
    from kiln.components.common.tracking import end_pipeline_run, start_pipeline_run
    from kiln.components.evaluate.step import evaluate_step
    from kiln.components.pretrain.step import pretrain_step

    cfg = with_changes(step_config(config_json), point["overrides"])
    tags = {"kiln.sweep_point": point["id"]}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id  # MLflow nests it under the sweep's run
    run_id = start_pipeline_run(cfg, workdir(), run_name=f"sweep-{point['id']}", tags=tags)
    out = Path(output_dir)
    try:
        if run_id:
            from kiln.components.common.pipeline_run import step_tracker

            step_tracker(cfg, run_id).log_params(
                {"sweep.budget": point["budget"], "sweep.params": point["params"],
                 "sweep.tokens": point["tokens"], **cfg.to_dict()}
            )  # fmt: skip
        pretrain_step(tokens_dir, str(out / "train"), cfg.to_json(), run_id)
        report = evaluate_step(
            str(out / "train" / "model"), tokens_dir, str(out / "eval"), cfg.to_json(), run_id
        )
    except BaseException:
        end_pipeline_run(cfg, run_id, "FAILED", workdir())
        raise
    end_pipeline_run(cfg, run_id, "FINISHED", workdir())
    result = {**point, "loss": report["metrics"]["val_loss"], "run_id": run_id}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    log.info(
        "sweep point %s: N %.3g, D %.3g, val loss %.4f", point["id"], point["params"],
        point["tokens"], result["loss"],
    )  # fmt: skip
    return result


def fit_sweep(
    results: list[dict], output_dir: str, target_flops: float = 0.0, bootstrap: int = 200
) -> dict[str, Any]:
    """Fit the runs, write sweep.json and the plots under `output_dir`; returns the report.

    A budget whose loss has no minimum inside the sizes tried is left out of the isoFLOP fit
    (listed under `isoflop_skipped` with the reason); the parametric fit uses every run.
    """
    runs = [Run(r["budget"], r["params"], r["tokens"], r["loss"]) for r in results]
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    skipped, usable = [], []
    for budget in sorted({r.flops for r in runs}):
        group = [r for r in runs if r.flops == budget]
        try:
            isoflop_minimum(budget, group)
            usable += group
        except ValueError as e:
            skipped.append({"budget": budget, "reason": str(e)})
    iso = fit_isoflop(usable, bootstrap=bootstrap) if len({r.flops for r in usable}) >= 2 else None
    par = fit_parametric(runs, bootstrap=max(10, bootstrap // 4))
    report: dict[str, Any] = {
        "runs": results,
        "fit": FitReport(len(runs), iso, par, None).to_dict(),
        "isoflop_skipped": skipped,
    }
    if target_flops:
        from kiln.components.scaling.fit import recommend

        report["recommendation"] = {"flops": target_flops, **recommend(report["fit"], target_flops)}
    (out / SWEEP_JSON).write_text(json.dumps(report, indent=2))
    plot_sweep(runs, iso, par, out)
    return report


def plot_sweep(runs: list[Run], iso, par, out: Path) -> None:
    """isoflop.png (loss vs N per budget, each parabola's minimum) and frontier.png (N* and D*
    against C from both fits, with the sweep's minima)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted({r.flops for r in runs})
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(budgets)))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for color, budget in zip(colors, budgets, strict=True):
        group = sorted((r for r in runs if r.flops == budget), key=lambda r: r.params)
        x = np.array([r.params for r in group])
        ax.scatter(x, [r.loss for r in group], color=color, label=f"C = {budget:.2g}")
        if len(group) >= 3:
            a, b, c = np.polyfit(np.log(x), [r.loss for r in group], 2)
            grid = np.geomspace(x.min(), x.max(), 50)
            ax.plot(grid, a * np.log(grid) ** 2 + b * np.log(grid) + c, color=color, alpha=0.6)
    if iso is not None:
        ax.scatter(
            [m["params"] for m in iso.minima], [m["loss"] for m in iso.minima],
            marker="*", s=140, color="crimson", label="isoFLOP minima", zorder=3,
        )  # fmt: skip
    ax.set(xscale="log", xlabel="parameters N", ylabel="held-out loss", title="isoFLOP curves")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "isoflop.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    span = np.geomspace(budgets[0] / 3, budgets[-1] * 30, 50)
    n3 = [par.optimal(c)[0] for c in span]
    ax.plot(span, n3, color="tab:blue", label=f"N* parametric (∝ C^{par.n_exponent:.2f})")
    ax.plot(span, [c / (6 * n) for c, n in zip(span, n3, strict=True)], color="tab:orange",
            label=f"D* parametric (∝ C^{par.d_exponent:.2f})")  # fmt: skip
    if iso is not None:
        n2 = [iso.optimal(c)[0] for c in span]
        ax.plot(span, n2, "--", color="tab:blue", label=f"N* isoFLOP (∝ C^{iso.n_exponent:.2f})")
        ax.scatter([m["flops"] for m in iso.minima], [m["params"] for m in iso.minima],
                   color="tab:blue", marker="*", s=100)  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel="N* (params), D* (tokens)",
           title="compute-optimal frontier")  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "frontier.png", dpi=110)
    plt.close(fig)


def log_sweep(cfg: Config, run_id: str, output_dir: str) -> None:
    """sweep.json and the plots into the sweep's MLflow run, under `sweep/`; headline metrics."""
    from kiln.components.common.pipeline_run import step_tracker

    tracker = step_tracker(cfg, run_id)
    out = Path(output_dir)
    report = json.loads((out / SWEEP_JSON).read_text())
    for name in (SWEEP_JSON, "isoflop.png", "frontier.png"):
        tracker.log_artifact(out / name, ARTIFACT_DIR)
    metrics = {
        "sweep/runs": len(report["runs"]),
        "sweep/parametric_n_exponent": report["fit"]["parametric"]["n_exponent"],
        "sweep/parametric_d_exponent": report["fit"]["parametric"]["d_exponent"],
    }
    if report["fit"]["isoflop"]:
        metrics["sweep/isoflop_n_exponent"] = report["fit"]["isoflop"]["n_exponent"]
        metrics["sweep/isoflop_d_exponent"] = report["fit"]["isoflop"]["d_exponent"]
    tracker.log_metrics(metrics)


def load_sweep_report(ref: str, tracking_uri: str = "", workdir: str = "kiln-work") -> dict:
    """sweep.json from a file, or from the `sweep/` artifacts of the MLflow run `ref`."""
    import tempfile

    from kiln.components.common.errors import UserError
    from kiln.components.common.tracking import (
        check_store,
        is_not_found,
        mlflow_client,
        resolve_tracking_uri,
    )

    path = Path(ref)
    if path.is_file():
        return json.loads(path.read_text())
    if path.suffix == ".json" or "/" in ref:
        raise FileNotFoundError(f"{ref}: no such sweep report (sweep.json from `kiln sweep`)")
    uri = resolve_tracking_uri(tracking_uri, workdir)
    check_store(uri)
    client = mlflow_client(uri)
    with tempfile.TemporaryDirectory(prefix="kiln-sweep-") as tmp:
        try:
            local = client.download_artifacts(ref, f"{ARTIFACT_DIR}/{SWEEP_JSON}", tmp)
        except Exception as e:
            if is_not_found(e) or "does not exist" in str(e) or "not found" in str(e).lower():
                raise UserError(
                    f"{ref}: neither a sweep.json file nor an MLflow run with {ARTIFACT_DIR}/"
                    f"{SWEEP_JSON} at {uri} (pass the sweep's run id from `kiln sweep`)"
                ) from None
            raise
        return json.loads(Path(local).read_text())
