"""KFP components of the sweep pipeline: the isoFLOP grid, one training run per point, the fit."""
# No `from __future__ import annotations`: KFP reads the real type annotations.

from typing import List  # noqa: UP035 (KFP reads typing.List for list outputs)

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from kiln.components.common.images import image_ref


@dsl.component(base_image=image_ref("cpu"), install_kfp_package=False)
def sweep_grid(
    tokens: Input[Dataset], config_json: str, run_id: str, budgets: str, sizes: int, spread: float
) -> List[str]:  # noqa: UP006
    """The isoFLOP grid: one JSON point per training run, complete in itself (shape overrides,
    budget, N, D, the config and the sweep's MLflow run), so a ParallelFor item is all a
    point's step needs.

    Args:
        tokens: the tokenize step's output (its manifest gives the vocabulary size).
        config_json: the resolved Kiln config (the preset's shape family and batch).
        run_id: the sweep's MLflow run (each point's run becomes its child).
        budgets: compute budgets in FLOPs, comma-separated (e.g. "1e10,3e10,1e11").
        sizes: model sizes per budget (at least 3).
        spread: the largest size ÷ Chinchilla's optimum for the budget (and optimum ÷ smallest).
    """
    import json

    from kiln.components.common.pipeline_run import step_config
    from kiln.components.pretrain.placement import model_shape
    from kiln.components.scaling.sweep import parse_budgets, sweep_grid

    cfg = step_config(config_json)
    vocab = model_shape(cfg.model, tokens.path).vocab_size
    points = sweep_grid(cfg, vocab, parse_budgets(budgets), sizes, spread)
    return [json.dumps({**p, "config_json": config_json, "parent_run_id": run_id}) for p in points]


@dsl.component(base_image=image_ref("gpu"), install_kfp_package=False)
def sweep_point(tokens: Input[Dataset], point: str, trained: Output[Model]) -> str:
    """Train one grid point and score it on the held-out split, in a child MLflow run.

    Args:
        tokens: the token shards every point trains and is scored on.
        point: the grid point (JSON from `sweep_grid`: overrides, config, the sweep's run).
        trained: train/ (checkpoints, model) and eval/ (eval.json) of this point.

    Returns:
        The point with its held-out loss and MLflow run id, as JSON.
    """
    import json

    from kiln.components.scaling.sweep import run_point

    item = json.loads(point)
    config_json, parent = item.pop("config_json"), item.pop("parent_run_id")
    return json.dumps(run_point(tokens.path, trained.path, config_json, item, parent))


@dsl.component(base_image=image_ref("cpu"), install_kfp_package=False)
def sweep_fit(
    results: List[str],  # noqa: UP006
    config_json: str,
    run_id: str,
    target_budget: float,
    report: Output[Artifact],
) -> str:
    """Fit the scaling laws to the runs; sweep.json and plots to `report` and the sweep's run.

    Args:
        results: every point's result (JSON from `sweep_point`).
        config_json: the resolved Kiln config (tracking settings).
        run_id: the sweep's MLflow run.
        target_budget: FLOPs to recommend N and D for (0 = none).
        report: sweep.json, isoflop.png, frontier.png.

    Returns:
        The fitted exponents, one line.
    """
    import json

    from kiln.components.common.pipeline_run import step_config
    from kiln.components.scaling.sweep import fit_sweep, log_sweep

    fitted = fit_sweep([json.loads(r) for r in results], report.path, target_budget)
    log_sweep(step_config(config_json), run_id, report.path)
    par = fitted["fit"]["parametric"]
    return f"N* ∝ C^{par['n_exponent']:.3f}, D* ∝ C^{par['d_exponent']:.3f} (parametric)"
