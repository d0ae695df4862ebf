"""`kiln train`: pretrain on token shards, in this process, on Ray Train workers, as a Ray job,
or as a Kubeflow TrainJob (`--set dist.launcher=trainjob`)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from kiln.components.common.config import from_dict, with_changes
from kiln.pipelines.commands.common import add_config_args, config_from_args

log = logging.getLogger("kiln.cli")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="pretrain a LLaMA-style model on token shards",
        description="Pretrain on the token shards of `kiln tokenize`. Checkpoints go to OUTPUT/checkpoints "
        "(or OUTPUT/ray with --workers), the final model to OUTPUT/model in Hugging Face format.",
    )
    p.add_argument(
        "--tokens",
        required=True,
        metavar="DIR",
        help="tokenized dataset (manifest.json, shards, tokenizer.json)",
    )
    p.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help="run directory for checkpoints, logs and the final model",
    )
    add_config_args(p)
    p.add_argument(
        "--config-json",
        metavar="JSON",
        help="a fully resolved config as JSON (what job submission sends)",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="Ray Train workers (sets dist.workers; 0 = plain process)",
    )
    p.add_argument(
        "--gpu", action="store_true", help="one GPU per Ray worker, NCCL (sets dist.use_gpu)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint in --output"
    )
    p.add_argument(
        "--ray-address",
        metavar="URL",
        help="http://HOST:8265 submits the run as a Ray job and streams its logs; ray://… or auto joins that cluster",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = from_dict(json.loads(args.config_json)) if args.config_json else config_from_args(args)
    flags = {"dist.workers": args.workers, "dist.ray_address": args.ray_address}
    flags = {key: value for key, value in flags.items() if value is not None and value != ""}
    if args.gpu:
        flags["dist.use_gpu"] = True
    cfg = with_changes(cfg, flags)
    # --tokens may be s3://… (Ray workers download it, verified); keep it a string then.
    tokens = args.tokens if args.tokens.startswith("s3://") else Path(args.tokens)
    output = Path(args.output)
    if cfg.dist.ray_address.startswith(("http://", "https://")):
        from kiln.components.pretrain.ray_launch import submit_job

        # The job runs on the cluster it is submitted to, on a Ray Train worker (not in the
        # job's driver) unless --workers says otherwise.
        job = {"dist.ray_address": ""}
        if args.workers is None and cfg.dist.workers == 0:
            job["dist.workers"] = 1
        job_cfg, address = with_changes(cfg, job), cfg.dist.ray_address
        job_id = submit_job(job_cfg, str(tokens), str(output), address, resume=args.resume)
        print(f"Ray job {job_id} succeeded; outputs in {output}")
        return 0
    output.mkdir(parents=True, exist_ok=True)
    (output / "config.json").write_text(cfg.to_json())
    if cfg.dist.launcher == "trainjob":  # a TrainJob on the current Kubernetes context
        from kiln.components.pretrain import checkpoint_store
        from kiln.components.pretrain.trainjob_launch import train_as_trainjob

        roots = checkpoint_store.resume_roots(cfg.dist.storage_path, output)
        if not args.resume and checkpoint_store.newest(roots):
            raise ValueError(f"{output} already holds checkpoints: pass --resume to continue them")
        # The nodes see the paths as given: s3:// tokens, or a filesystem they share with us.
        final = train_as_trainjob(cfg, tokens, output, "", s3_root=None)
    elif cfg.dist.workers > 0:
        from kiln.components.pretrain.ray_launch import copy_final_checkpoint, launch

        result = launch(cfg, tokens, output, resume=args.resume)
        final = copy_final_checkpoint(result, output)
    else:
        from kiln.components.pretrain import pretrain

        final = pretrain(cfg, tokens, output, resume=args.resume).checkpoint
    from kiln.components.pretrain.export import export_checkpoint

    tokenizer = _tokenizer_file(tokens, output)
    model_dir = export_checkpoint(
        final, output / "model", tokenizer if tokenizer.exists() else None
    )
    print(f"final checkpoint: {final}\nHugging Face model: {model_dir}")
    return 0


def _tokenizer_file(tokens: str | Path, output: Path) -> Path:
    """The dataset's tokenizer.json as a local file (fetched, verified, when the data is on S3)."""
    if isinstance(tokens, Path):
        return tokens / "tokenizer.json"
    from kiln.components.common import storage

    local = output / "tokenizer.json"
    storage.download_file(storage.join(tokens, "tokenizer.json"), local, verify=True)
    return local
