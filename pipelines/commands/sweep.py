"""`kiln sweep`: a scaling-law sweep run locally with the KFP local runner, then its fit."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from kiln.components.common.config import RunParams

# A sweep's points are short runs: one plain process each unless --workers says otherwise.
SWEEP_DEFAULTS = RunParams(workers=0)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="scaling-law sweep: train model sizes per compute budget, fit compute-optimal N, D",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Run the kiln-sweep pipeline on this machine (KFP local runner, as `kiln run` does): ingest and
tokenize the corpus once, then for each compute budget C train --sizes model shapes of the
preset's family around Chinchilla's optimum, each on D = C / 6N tokens, score every run on the
same held-out split (each an MLflow child run of the sweep's run), and fit the scaling laws
(isoFLOP parabolas and L(N, D) = E + A/N^α + B/D^β). sweep.json and the plots go to the step
outputs and to the sweep's MLflow run under sweep/; `kiln plan --from-sweep` reads them.
On a cluster, `kiln compile --pipeline sweep` writes the same pipeline for `kiln submit`.

examples:
  kiln sweep --budgets 3e10,1e11,3e11 --set tokenizer.vocab_size=512     # CPU, minutes
  kiln sweep --data corpus/ --budgets 1e17,3e17,1e18 --preset small --target-budget 1e20
  kiln plan --preset small --budget 1e20 --from-sweep RUN_ID
""",
    )
    p.add_argument(
        "--budgets",
        required=True,
        metavar="FLOPS,...",
        help="compute budgets in training FLOPs, comma-separated (at least 2; 3+ recommended)",
    )
    p.add_argument("--sizes", type=int, default=3, help="model sizes per budget (default 3, min 3)")
    p.add_argument(
        "--spread",
        type=float,
        default=3.0,
        help="largest size ÷ Chinchilla's optimum per budget, and optimum ÷ smallest (default 3)",
    )
    p.add_argument(
        "--target-budget",
        type=float,
        default=0.0,
        metavar="FLOPS",
        help="also recommend N and D for this budget in sweep.json",
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=1,
        metavar="N",
        help="points trained at once on this machine (default 1: each uses every core)",
    )
    p.add_argument("--data", metavar="URI", default="", help="raw text (default: built-in corpus)")
    p.add_argument("--workdir", default="kiln-work", metavar="DIR", help="as for `kiln run`")
    RunParams.add_arguments(p, SWEEP_DEFAULTS)
    p.add_argument("--json", action="store_true", help="print sweep.json instead of a summary")
    p.add_argument("--verbose", action="store_true", help="stream the KFP runner's full output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kiln.components.scaling.sweep import parse_budgets

    parse_budgets(args.budgets)  # inputs first: a bad budget fails before any step
    if args.parallel < 1:
        raise ValueError(f"--parallel must be at least 1, got {args.parallel}")
    if args.sizes < 3:
        raise ValueError(
            f"--sizes: an isoFLOP fit needs at least 3 sizes per budget, got {args.sizes}"
        )
    params = RunParams.from_args(args)
    params.resolve()
    if args.data:
        from kiln.pipelines.corpus import check_data

        check_data(args.data)
    from kiln.pipelines.console import RunConsole, strip_ansi
    from kiln.pipelines.local import run_sweep_local

    kwargs = dict(
        budgets=args.budgets, sizes=args.sizes, spread=args.spread,
        target_budget=args.target_budget, workdir=args.workdir, data=args.data,
        parallel=args.parallel,
    )  # fmt: skip
    try:
        if args.verbose:
            result = run_sweep_local(params, **kwargs)
        else:
            log_path = Path(args.workdir) / "kiln-sweep.log"
            print(f"kiln sweep: the full step log is in {log_path}", flush=True)
            with RunConsole(log_path) as console, contextlib.redirect_stdout(console):
                result = run_sweep_local(params, **kwargs)
    except RuntimeError as e:
        print(f"kiln sweep: {strip_ansi(str(e))}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.report, indent=2))
        return 0
    print(summary(result))
    return 0


def summary(result) -> str:
    report = result.report
    fit = report["fit"]
    lines = [f"kiln sweep finished in {result.seconds:.0f}s: {len(report['runs'])} runs"]
    for r in sorted(report["runs"], key=lambda r: (r["budget"], r["params"])):
        lines.append(
            f"  C {r['budget']:.2g}  N {r['params']:>12,.0f}  D {r['tokens']:>12,.0f}  "
            f"val loss {r['loss']:.4f}"
        )
    for name in ("isoflop", "parametric"):
        f = fit.get(name)
        if f:
            lines.append(
                f"  {name:10}  N* ∝ C^{f['n_exponent']:.3f} [{f['n_interval'][0]:.3f}, "
                f"{f['n_interval'][1]:.3f}]   D* ∝ C^{f['d_exponent']:.3f} "
                f"[{f['d_interval'][0]:.3f}, {f['d_interval'][1]:.3f}]"
            )
    for s in report.get("isoflop_skipped", []):
        lines.append(f"  isoFLOP fit left out {s['reason']}")
    rec = report.get("recommendation")
    if rec:
        lines.append(
            f"  for {rec['flops']:.3g} FLOPs: N ≈ {rec['params']:.3g}, D ≈ {rec['tokens']:.3g}, "
            f"predicted loss {rec['loss']:.3f}"
        )
    lines += [
        f"  report        {result.report_dir} (sweep.json, isoflop.png, frontier.png)",
        f"  MLflow        {result.mlflow_uri}  run {result.run_id or '-'} (artifacts sweep/)",
        f"  next          kiln plan --budget FLOPS --from-sweep {result.run_id or result.report_dir / 'sweep.json'}",
    ]
    return "\n".join(lines)
