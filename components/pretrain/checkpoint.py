"""Training checkpoints: written atomically, loaded without unpickling arbitrary objects.

A checkpoint is a directory `step_<N>/`:

    model.safetensors    full (unsharded) model weights
    optimizer.pt         full optimizer state, parameters keyed by name (tensors + plain values only)
    rng.pt               torch CPU (and CUDA) RNG states
    trainer_state.json   step, loader cursor, counters, tokens seen
    config.json          the resolved Kiln config

It is assembled in a hidden temp directory beside its final place and renamed into place last, so a
crash never leaves a half checkpoint under a `step_<N>` name. Loading uses safetensors and
`torch.load(weights_only=True)` only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

_STEP_DIR = re.compile(r"^step_(\d+)$")
MODEL, OPTIM, RNG, STATE, CONFIG = (
    "model.safetensors",
    "optimizer.pt",
    "rng.pt",
    "trainer_state.json",
    "config.json",
)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_checkpoint(
    directory: str | Path,
    model_state: dict[str, torch.Tensor],
    optim_state: dict[str, Any],
    trainer_state: dict[str, Any],
    config: dict[str, Any],
    tied: bool = False,
) -> Path:
    """Write all checkpoint files into `directory` (which must not exist yet); returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in model_state.items()}
    if tied:  # safetensors refuses shared storage; the output head is the embedding.
        weights.pop("lm_head.weight", None)
    save_file(
        weights, directory / MODEL, metadata={"format": "pt", "step": str(trainer_state["step"])}
    )
    torch.save(optim_state, directory / OPTIM)
    torch.save(rng_state(), directory / RNG)
    (directory / STATE).write_text(json.dumps(trainer_state, indent=2, sort_keys=True))
    (directory / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
    return directory


def save_atomic(root: str | Path, step: int, writer, keep: int = 0) -> Path:
    """Run `writer(tmp_dir)` then rename tmp_dir to `root/step_<step>`; prune to the last `keep`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step}"
    tmp = root / f".tmp-step_{step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    writer(tmp)
    if final.exists():  # e.g. the same step saved again after a restart: replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep > 0:
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: str | Path) -> list[Path]:
    """Committed checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _STEP_DIR.match(p.name)) and p.is_dir()
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str | Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def read_checkpoint(directory: str | Path, tied: bool | None = None) -> dict[str, Any]:
    """Load a checkpoint's parts: model, optim, rng, trainer_state, config."""
    directory = Path(directory)
    missing = [n for n in (MODEL, OPTIM, STATE, CONFIG) if not (directory / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"{directory} is not a complete checkpoint (missing {', '.join(missing)})"
        )
    config = json.loads((directory / CONFIG).read_text())
    model = load_file(directory / MODEL)
    if tied is None:
        tied = bool(config.get("model", {}).get("tie_embeddings"))
    if tied and "lm_head.weight" not in model:
        model["lm_head.weight"] = model["embed_tokens.weight"]
    rng = torch.load(directory / RNG, weights_only=True) if (directory / RNG).exists() else None
    return {
        "model": model,
        "optim": torch.load(directory / OPTIM, weights_only=True),
        "rng": rng,
        "trainer_state": json.loads((directory / STATE).read_text()),
        "config": config,
    }


def check_same_model(directory: str | Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Raise ValueError when the checkpoint in `directory` holds another model than `current`
    (e.g. `--resume` with a changed `--set model.dim=…`), before loading fails with a long
    size-mismatch error. `saved`/`current` are model configs as dicts; `init_std` is ignored
    (it only matters at initialization)."""
    changed = [
        f"{key} {saved[key]} there, {current[key]} now"
        for key in sorted(saved.keys() & current.keys() - {"init_std"})
        if saved[key] != current[key]
    ]
    if changed:
        raise ValueError(
            f"checkpoint in {directory} was trained with a different model shape "
            f"({'; '.join(changed)}); drop the --set model.* overrides or use a new --output"
        )
