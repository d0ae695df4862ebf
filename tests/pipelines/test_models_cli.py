"""`kiln models` end to end against a real MLflow server (in process and as the `kiln` script)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from kiln.components.common.registry import ModelRegistry
from kiln.pipelines.cli import main


def _setup(name: str) -> ModelRegistry:
    reg = ModelRegistry()
    lineage = {"dataset_digest": "ds1", "tokenizer_digest": "tk1", "val_set_digest": "v1"}
    for run, loss in (("r1", 3.0), ("r2", 3.4)):
        reg.register(
            name,
            f"s3://b/models/{run}",
            training_run_id=run,
            tags={**lineage, "pipeline_run_id": f"p-{run}"},
            metrics={"val_loss": loss, "perplexity": 2.0 * loss},
        )
    reg.promote_if_better(name, "1")
    return reg


def test_list_show_promote(mlflow_env, capsys):
    name = f"kiln-models-{uuid.uuid4().hex[:8]}"
    _setup(name)
    assert main(["models", "list"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(name))
    assert line.split()[1:3] == ["2", "2"] and "candidate=v2, champion=v1" in line

    assert main(["models", "show", name, "--alias", "champion", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["version"] == "1" and info["source"] == "s3://b/models/r1"
    assert info["metrics"] == {"val_loss": 3.0, "perplexity": 6.0}
    assert info["tags"]["dataset_digest"] == "ds1" and info["tags"]["pipeline_run_id"] == "p-r1"

    assert main(["models", "show", name]) == 0  # latest, as text
    out = capsys.readouterr().out
    assert f"{name} version 2  aliases: candidate" in out and "val_loss" in out

    # v2 is worse: the gate refuses it; an explicit promote moves the alias anyway.
    assert main(["models", "promote", name, "2", "--if-better"]) == 1
    assert "does not beat champion v1" in capsys.readouterr().out
    assert main(["models", "promote", name, "2", "--alias", "champion"]) == 0
    assert ModelRegistry().show(name, alias="champion")["version"] == "2"
    assert main(["models", "promote", name, "7"]) == 2
    assert "has no version 7" in capsys.readouterr().err


def test_kiln_script_show(mlflow_env):
    name = f"kiln-models-{uuid.uuid4().hex[:8]}"
    _setup(name)
    kiln = Path(sys.executable).parent / "kiln"
    cmd = [str(kiln), "models", "show", name, "--version", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "source:      s3://b/models/r1" in done.stdout
    assert "aliases: champion" in done.stdout
