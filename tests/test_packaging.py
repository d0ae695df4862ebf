"""Kiln installs as one top-level package, `kiln`, over the repository's fixed folders."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_source_folder_is_listed_as_a_kiln_package():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        "kiln." + str(init.parent.relative_to(ROOT)).replace("/", ".")
        for top in ("components", "pipelines")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert set(setuptools["packages"]) == found


def test_only_kiln_is_importable_not_the_folder_names(tmp_path):
    # Run outside the repository, so only what is installed can be imported.
    code = (
        "import importlib.util as u, kiln.pipelines.cli, kiln.components.pretrain.model;"
        "print(u.find_spec('components'), u.find_spec('pipelines'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["None", "None"]
