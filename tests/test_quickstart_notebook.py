"""docs/notebooks/quickstart.ipynb: stored clean, and runs end to end on the local path.

The notebook is executed with nbclient in a fresh kernel (this venv's Python, through a
kernelspec written to a temporary JUPYTER_PATH), with no KFP host, S3 endpoint or MLflow server
in the environment: it runs the local pipeline, then lists, fetches and generates from what that
run registered. A cell injected after the parameters cell makes the run tiny (about a minute).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "docs" / "notebooks" / "quickstart.ipynb"
# Everything that would point the notebook at a cluster or at services outside the test.
OUTSIDE = (
    "KILN_KFP_HOST", "KFP_TOKEN", "AWS_S3_ENDPOINT", "AWS_S3_BUCKET", "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY", "KILN_S3_LOCAL_ROOT", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID",
    "RAY_ADDRESS", "KILN_WORKDIR",
)  # fmt: skip


def _parameters_index(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"exactly one cell tagged 'parameters', found {len(tagged)}"
    return tagged[0]


def test_stored_notebook_is_valid_and_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code:
        assert not cell.outputs and cell.execution_count is None, (
            f"{NOTEBOOK.name} is stored with outputs (cell {cell.get('id')}): clear them"
        )
    index = _parameters_index(nb)
    assert nb.cells[index] is code[0], "the parameters cell is the first code cell"
    assert nb.metadata.kernelspec.name == "python3"


def _tiny_run(workdir: Path) -> str:
    """The injected parameters: no cluster, a tiny model trained for a few steps."""
    overrides = [
        "train.eval_every=0", "tokenizer.vocab_size=512", "eval.max_tokens=1024",
        "eval.sample_tokens=8", "ingest.workers=1", "tokenizer.workers=1",
    ]  # fmt: skip
    return "\n".join(
        [
            'kfp_host = ""',
            'mlflow_uri = ""',
            "max_steps = 10",
            f"overrides = {overrides!r}",
            "workers = 0",
            f"workdir = {str(workdir)!r}",
            "max_new_tokens = 16",
            "import sys",
            'print("kernel python:", sys.executable)',
        ]
    )


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.data.get("text/plain", ""))
    return "".join(parts)


@pytest.fixture
def python3_kernel(tmp_path, monkeypatch):
    """A `python3` kernelspec for this interpreter, found first (JUPYTER_PATH), whatever
    kernels the machine has; runtime and IPython files in the test's directory."""
    from ipykernel.kernelspec import install

    prefix = tmp_path / "jupyter"
    install(kernel_name="python3", prefix=str(prefix))
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    return "python3"


def test_quickstart_runs_locally_end_to_end(tmp_path, monkeypatch, python3_kernel):
    from nbclient import NotebookClient

    for key in OUTSIDE:  # the kernel inherits this environment
        monkeypatch.delenv(key, raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    injected = nbformat.v4.new_code_cell(_tiny_run(tmp_path / "work"))
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(_parameters_index(nb) + 1, injected)
    run_dir = tmp_path / "nb"
    run_dir.mkdir()

    client = NotebookClient(
        nb, timeout=300, kernel_name=python3_kernel, resources={"metadata": {"path": str(run_dir)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on an error

    out = "\n".join(_text(c) for c in nb.cells if c.cell_type == "code")
    assert f"kernel python: {sys.executable}" in out  # this venv, with Kiln installed
    assert "▶ pretrain" in out and "✓ publish" in out  # the step view, not KFP's full dump
    assert re.search(r"registered: kiln-llama version 1 \[.*'candidate'.*\]", out), out
    assert re.search(r"source: s3://kiln/\S+/model", out), out
    assert re.search(r"\d+ files, each sha256 verified", out), out
    generated = re.search(r"generated: '(.*)'", out)
    assert generated and len(generated[1]) > len("The "), out
    assert (tmp_path / "work" / "models" / "kiln-llama-v1" / "model.safetensors").exists()
    assert (tmp_path / "work" / "kiln-run.log").stat().st_size > 0  # KFP's full output
