"""`kiln run`: the whole pipeline on this machine (KFP local runner), on embedded defaults."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from kiln.components.common.config import RunParams
from kiln.pipelines.commands.common import add_pipeline_choice, pipeline_params
from kiln.pipelines.options import LOCAL_DEFAULTS

log = logging.getLogger("kiln.cli")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the whole pipeline locally: ingest → tokenize → pretrain → evaluate → publish",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Run the same Kubeflow pipeline that `kiln compile` writes, on this machine, with the KFP local
runner (each step a subprocess of this Python). Nothing but Python is needed:

  data      --data, else a built-in corpus: Python's own documentation (pydoc_data help topics
            and standard-library docstrings), written to WORKDIR/corpus/
  Ray       started locally inside the pretrain step (--workers N; 0 = no Ray)
  MLflow    --mlflow-uri, else $MLFLOW_TRACKING_URI, else sqlite:///WORKDIR/mlflow.db
  S3        a real endpoint when AWS_S3_ENDPOINT (+ AWS_S3_BUCKET, AWS_ACCESS_KEY_ID,
            AWS_SECRET_ACCESS_KEY) is set, else a local stand-in: s3://kiln/… URIs stored under
            WORKDIR/s3 (KILN_S3_LOCAL_ROOT), with the same sha256 records
  outputs   every step's KFP artifacts under WORKDIR/kfp/kiln-pretrain-<time>/<step>/

At the end it prints the model directory, the MLflow run and registered version (aliases
candidate/champion), the S3 URIs and a sample generation. With the tiny preset this takes a
few minutes on a laptop CPU.

examples:
  kiln run                                         # built-in corpus, tiny preset
  kiln run --data 'corpus/*.jsonl' --set train.max_steps=500
  kiln run --mlflow-uri http://127.0.0.1:5000 --workers 0
  kiln run --pipeline sft --base models:/kiln-llama@candidate   # a chat model from the last run
""",
    )
    p.add_argument(
        "--data",
        metavar="URI",
        default="",
        help="raw text to train on: files, globs, directories, s3://bucket/prefix or hf://org/name "
        "(comma-separated); default: the built-in Python-documentation corpus",
    )
    p.add_argument(
        "--workdir",
        default="kiln-work",
        metavar="DIR",
        help="where the corpus, step outputs, local MLflow store and local S3 go (default: kiln-work)",
    )
    RunParams.add_arguments(p, LOCAL_DEFAULTS)
    add_pipeline_choice(
        p,
        "--data: .jsonl/.json records; default: built-in questions about Python's standard library",
    )
    p.add_argument(
        "--baseline",
        default="",
        metavar="MODEL",
        help="compare with this model in evaluate: models:/NAME@champion, s3://… or a directory",
    )
    p.add_argument(
        "--json", action="store_true", help="print the result as JSON instead of a summary"
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="stream the KFP runner's full output (every step's executor input/output); by "
        "default it goes to WORKDIR/kiln-run.log and the terminal shows steps and progress",
    )
    p.set_defaults(func=run)


def _summary(result, preset: str | None = None) -> str:
    pub = result.published
    reg = pub.get("registered") or {}
    champion = pub.get("champion") or {}
    ev = result.eval
    lines = [
        f"kiln run finished in {result.seconds:.0f}s",
        f"  model (Hugging Face)  {result.model_dir}",
        f"  step outputs          {result.run_dir}",
        f"  MLflow                {result.mlflow_uri}  run {result.run_id or '-'}",
    ]
    if reg:
        from kiln.pipelines.console import registration_line

        lines.append(f"  registered            {registration_line(reg, champion)}")
    lines += [
        f"  published             {pub.get('model_uri')}",
        f"  report                {pub.get('report_uri')}",
        f"  eval                  val_loss {ev.get('val_loss', float('nan')):.4f}  "
        f"perplexity {ev.get('perplexity', float('nan')):.1f}  "
        f"bits/byte {ev.get('bits_per_byte', float('nan')):.3f}  "
        f"gate {'passed' if ev.get('gate', {}).get('passed') else 'FAILED'}",
    ]
    if pub.get("inference_service"):
        lines.append(f"  serving manifest      {pub['inference_service']}")
    lines.append(f"  sample                {result.sample!r}")
    if not os.environ.get("AWS_S3_ENDPOINT"):
        workdir = result.run_dir.parents[1]
        lines.append(
            f"s3:// URIs above live in the local stand-in {workdir / 's3'}; `kiln artifacts` and "
            f"`kiln models` read it (pass --workdir {workdir} from another directory)"
        )
    if preset == "tiny":
        lines.append(
            "next: `tiny` is sized for seconds, not for quality; --preset mini trains a model "
            "that learns the text (a few minutes on a laptop CPU; presets: docs/training.md)"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    # Inputs first: a wrong --data or --set fails in a second, before the workdir or any step.
    params = pipeline_params(args)
    cfg = params.resolve()
    if args.pipeline == "sft":
        from kiln.components.sft.prepare import check_base

        check_base(cfg.sft.base, cfg, args.workdir)
    if args.data and args.pipeline == "pretrain":
        from kiln.pipelines.corpus import check_data

        check_data(args.data)
    from kiln.pipelines.console import RunConsole, strip_ansi
    from kiln.pipelines.local import LocalRun, run_local

    local = LocalRun(
        params,
        workdir=args.workdir,
        data=args.data,
        baseline_model=args.baseline,
        pipeline=args.pipeline,
    )
    try:
        if args.verbose:
            result = run_local(local)
        else:
            log_path = Path(args.workdir) / "kiln-run.log"
            print(f"kiln run: the full step log is in {log_path}", flush=True)
            with RunConsole(log_path) as console, contextlib.redirect_stdout(console):
                result = run_local(local)
    except RuntimeError as e:
        # A failed step: its log is above, and the MLflow run is marked FAILED.
        print(f"kiln run: {strip_ansi(str(e))}", file=sys.stderr)
        return 1
    _report(result, args.json, params.preset)
    return 0


def _report(result, as_json: bool, preset: str | None = None) -> None:
    if as_json:
        out = {
            "model_dir": str(result.model_dir),
            "run_dir": str(result.run_dir),
            "mlflow_uri": result.mlflow_uri,
            "run_id": result.run_id,
            "eval": {k: result.eval.get(k) for k in ("val_loss", "perplexity", "bits_per_byte")},
            "published": result.published,
            "sample": result.sample,
            "seconds": round(result.seconds, 1),
        }
        print(json.dumps(out, indent=2, default=str))
    else:
        print(_summary(result, preset))
