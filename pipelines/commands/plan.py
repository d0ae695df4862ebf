"""`kiln plan`: parameters, FLOPs, memory per GPU, time and cost of a config, before any GPU is booked."""

from __future__ import annotations

import argparse
import json
import os

from kiln.components.common.gpus import GPUS
from kiln.pipelines.commands.common import add_config_args, config_from_args
from kiln.pipelines.commands.models import add_tracking_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="size a training run: parameters, FLOPs, memory per GPU, GPUs needed, time, cost",
        description="Pre-flight arithmetic for a config (--preset, --config, --set as for `kiln "
        "train`): parameter count (embedding and the rest), training tokens and FLOPs (6·N·D "
        "plus attention, counted as the MFU meter counts them), memory per GPU for weights, "
        "gradients, optimizer state and activations under DDP and FSDP2 with and without "
        "activation checkpointing, the fewest GPUs each fits on, wall-clock on --gpus GPUs at "
        "--mfu, GPU-hours and cost, and Chinchilla's compute-optimal token count (≈20 per "
        "parameter). Training tokens are train.max_steps × global tokens per step unless "
        "--tokens is given. The vocabulary is model.vocab_size (training sizes it from the "
        "tokenizer).",
        epilog="example: kiln plan --preset gpt2-124m --gpus 8 --gpu-type h100 --mfu 0.4",
    )
    add_config_args(p)
    p.add_argument("--gpus", type=int, default=1, help="GPUs to train on (default 1)")
    p.add_argument(
        "--gpu-type",
        default="h100",
        choices=list(GPUS),
        metavar="TYPE",
        help=f"GPU model for peak FLOP/s and memory: {', '.join(GPUS)} (default h100)",
    )
    p.add_argument(
        "--mfu",
        type=float,
        default=0.4,
        help="model FLOPs utilization to assume, in (0, 1] (default 0.4)",
    )
    p.add_argument(
        "--usd-per-gpu-hour", type=float, default=None, metavar="USD", help="price for a cost line"
    )
    p.add_argument(
        "--tokens",
        type=float,
        default=None,
        help="training tokens (e.g. 2.5e9) instead of max_steps × tokens per step",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="FLOPS",
        help="plan the compute-optimal model for this many training FLOPs (e.g. 1e20): size "
        "and tokens from --from-sweep, else Chinchilla's 20 tokens per parameter",
    )
    p.add_argument(
        "--from-sweep",
        default=None,
        metavar="RUN",
        help="the sweep to size --budget from: its MLflow run id (`kiln sweep` prints it) or "
        "its sweep.json file",
    )
    p.add_argument(
        "--write-config",
        metavar="FILE",
        default=None,
        help="with --budget: write the recommended config (.json or .yaml) for `kiln train "
        "--config FILE` / `kiln run --config FILE`",
    )
    add_tracking_args(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kiln.components.scaling.plan import make_plan

    cfg = config_from_args(args)
    if args.tokens is not None and args.tokens <= 0:
        raise ValueError(f"--tokens must be positive, got {args.tokens:g}")
    recommendation = None
    if args.write_config and not args.budget:
        raise ValueError("--write-config needs --budget FLOPS: it writes the config sized for it")
    if args.write_config and not args.write_config.endswith((".json", ".yaml", ".yml")):
        raise ValueError(f"--write-config {args.write_config}: name a .json or .yaml file")
    if args.from_sweep and not args.budget:
        raise ValueError("--from-sweep needs --budget FLOPS: the budget to size the model for")
    if args.budget:
        if args.tokens is not None:
            raise ValueError("give --budget or --tokens, not both (the budget decides the tokens)")
        recommendation = _recommend(args, cfg)
        args.tokens = recommendation["tokens"]
    plan = make_plan(
        cfg,
        gpus=args.gpus,
        gpu=args.gpu_type,
        mfu=args.mfu,
        usd_per_gpu_hour=args.usd_per_gpu_hour,
        train_tokens=None if args.tokens is None else int(args.tokens),
    )
    if args.write_config:
        _write_config(cfg, args.write_config)
        recommendation["config_file"] = args.write_config
    if args.json:
        out = plan.to_dict()
        if recommendation:
            out["recommendation"] = recommendation
        print(json.dumps(out, indent=2))
        return 0
    if recommendation:
        r = recommendation
        print(
            f"for {args.budget:.3g} FLOPs ({r['source']}): {_n(r['params'])} parameters on "
            f"{_n(r['tokens'])} tokens"
            + (f", predicted loss {r['loss']:.3f}" if r.get("loss") else "")
        )
        preset = f"--preset {args.preset} " if args.preset else ""
        sets = " ".join(f"--set {o}" for o in r["overrides"])
        print(f"train it with: kiln train --tokens DIR --output DIR {preset}{sets}")
        if args.write_config:
            print(f"  or: kiln train --tokens DIR --output DIR --config {args.write_config}")
        print()
    print(render(plan))
    return 0


def _write_config(cfg, path: str) -> None:
    from pathlib import Path

    data = json.loads(cfg.to_json())
    if path.endswith(".json"):
        text = json.dumps(data, indent=2) + "\n"
    else:
        import yaml

        text = yaml.safe_dump(data, sort_keys=False)
    Path(path).write_text(text)


def _recommend(args: argparse.Namespace, cfg) -> dict:
    """N and D for --budget, from the sweep's fit or Chinchilla's ratio; applies the shape to cfg."""
    import math
    import sys

    from kiln.components.scaling.fit import recommend
    from kiln.components.scaling.plan import (
        chinchilla_optimal,
        family,
        shape_for_params,
        tokens_per_step,
    )

    if args.budget <= 0:
        raise ValueError(f"--budget must be positive FLOPs, got {args.budget:g}")
    if args.from_sweep:
        from kiln.components.scaling.sweep import load_sweep_report

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file

        sweep = load_sweep_report(args.from_sweep, args.tracking_uri, args.workdir)
        try:
            found = recommend(sweep["fit"], args.budget)
        except (KeyError, TypeError) as e:
            raise ValueError(f"{args.from_sweep}: not a sweep report with a fit ({e})") from None
        found["source"] = f"the fit of sweep {args.from_sweep}"
    else:
        print(
            "warning: no --from-sweep: sizing by Chinchilla's published 20 tokens per parameter; "
            "a sweep on your own data gives your own ratio",
            file=sys.stderr,
        )
        n, d = chinchilla_optimal(args.budget)
        found = {"params": n, "tokens": d, "source": "Chinchilla's 20 tokens per parameter"}
    # A sweep counts N as the MFU meter does (no lookup-only embedding); Chinchilla, all of them.
    shape = shape_for_params(
        cfg.model, found["params"], non_embedding=bool(args.from_sweep), **family(cfg.model)
    )
    cfg.model = shape
    per_step = tokens_per_step(cfg, args.gpus)
    steps = max(1, math.ceil(found["tokens"] / per_step))
    cfg.train.max_steps = steps
    found["overrides"] = [
        f"model.dim={shape.dim}",
        f"model.n_layers={shape.n_layers}",
        f"model.n_heads={shape.n_heads}",
        f"model.n_kv_heads={shape.n_kv_heads}",
        "model.ffn_dim=0",
        f"train.max_steps={steps}",
    ]
    return found


def _n(x: float) -> str:
    """1.24e8 -> '124.0M'."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.1f}{unit}"
    return f"{x:.0f}"


def _gb(b: float) -> str:
    return f"{b / 1e9:.1f} GB"


def _hours(h: float) -> str:
    return f"{h * 60:.1f} min" if h < 1 else f"{h:.1f} h" if h < 48 else f"{h / 24:.1f} days"


def render(plan) -> str:
    p = plan.params
    ratio = plan.train_tokens / p.total
    muon = plan.optimizer == "muon"
    optimizer = "Muon for the blocks' matrices, AdamW for the rest" if muon else "AdamW"
    lines = [
        f"parameters        {_n(p.total)} ({p.total:,}): embedding {_n(p.embedding)}, "
        f"attention {_n(p.attention)}, MLP {_n(p.mlp)}, head {_n(p.head) if p.head else 'tied'}",
        f"training tokens   {_n(plan.train_tokens)} ({plan.steps:,} steps × "
        f"{plan.tokens_per_step:,} tokens, {ratio:.1f} per parameter; Chinchilla-optimal "
        f"≈ {_n(plan.chinchilla_tokens)})",
        f"training FLOPs    {plan.train_flops:.3g} ({plan.flops_per_token:.3g} per token: "
        "6·N + attention)",
        f"time              {_hours(plan.hours)} on {plan.gpus} × {plan.gpu} "
        f"({plan.gpu_peak_bf16 / 1e12:.0f} TFLOP/s bf16) at {plan.mfu:.0%} MFU; "
        f"{plan.gpu_hours:,.1f} GPU-hours"
        + (f", ${plan.cost_usd:,.0f}" if plan.cost_usd is not None else ""),
        "",
        f"memory per GPU ({plan.gpus} × {plan.gpu}, {plan.gpu_memory_gb:g} GB; micro-batch "
        f"{plan.micro_batch_size} × {plan.seq_len} tokens; bf16 autocast, {optimizer}):",
        f"  {'strategy':12} {'weights':>9} {'grads':>9} {'optimizer':>9} {'activations':>12} "
        f"{'total':>9}  fits  fewest GPUs",
    ]
    for key, m in plan.memory.items():
        fewest = plan.smallest_fit[key]
        lines.append(
            f"  {key:12} {_gb(m.weights):>9} {_gb(m.gradients):>9} {_gb(m.optimizer):>9} "
            f"{_gb(m.activations):>12} {_gb(m.total):>9}  {'yes' if plan.fits[key] else 'no ':4}"
            f"  {fewest if fewest else 'none'}"
        )
    if muon:
        lines.append(
            "  (fsdp: Muon needs whole matrices and is refused under FSDP2; "
            "add --set optim.name=adamw to plan for it)"
        )
    return "\n".join(lines)
