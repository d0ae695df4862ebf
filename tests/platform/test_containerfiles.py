"""Policy checks on images/Containerfile.* (base images cannot be pulled here, so no full build).

Numeric non-root USER, group-0 writable HOME/caches, pinned bases, installs that use the same
constraints file as `make install`/CI, OCI labels, no secrets, a build context that admits what
is copied; the workbench image's contract with OpenShift AI; and the constraints themselves.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from kiln.components.common.images import DEFAULT_REGISTRY, PYTHON_VERSION, RAY_VERSION

from .conftest import REPO

IMAGES = REPO / "images"
CONSTRAINTS = "images/constraints.txt"
SECRETISH = re.compile(r"(PASSWORD|SECRET|TOKEN|CREDENTIAL|ACCESS_KEY|PRIVATE|API_KEY)", re.I)


def _instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = (IMAGES / f"Containerfile.{name}").read_text()
    text = re.sub(
        r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    )
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _args(instrs) -> dict[str, str]:
    return dict(re.match(r"(\w+)=?(.*)", a).groups() for w, a in instrs if w == "ARG")


@pytest.fixture(params=["cpu", "gpu", "workbench"])
def image(request):
    return request.param


def test_final_user_is_numeric_non_root(image):
    users = [a for w, a in _instructions(image) if w == "USER"]
    assert users, "no USER: the image would run as root"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) > 0, (
        f"final USER {users[-1]!r} must be a numeric non-root UID"
    )
    assert group in ("", "0"), "primary group 0 so files it creates are group-0 writable"


def test_base_images_pinned(image):
    instrs = _instructions(image)
    args = _args(instrs)
    for word, arg in instrs:
        if word != "FROM":
            continue
        ref = arg.split()[0]
        ref = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], ref)
        if ref in {a.split(" AS ")[-1].strip() for w, a in instrs if w == "FROM" and " AS " in a}:
            continue  # a previous stage
        name, _, tag = ref.rpartition(":")
        assert "@sha256:" in ref or (name and re.search(r"\d", tag) and tag != "latest"), ref


def test_gpu_base_matches_ray_and_python():
    base = _args(_instructions("gpu"))["RAY_IMAGE"]
    assert base.endswith(f"rayproject/ray:{RAY_VERSION}-py{PYTHON_VERSION.replace('.', '')}-gpu"), (
        base
    )
    cpu_base = _args(_instructions("cpu"))["PYTHON_IMAGE"]
    assert f"python:{PYTHON_VERSION}." in cpu_base, cpu_base


# The workbench's HOME is the workbench volume, which OpenShift AI mounts group-0 writable.
@pytest.mark.parametrize("image", ["cpu", "gpu"])
def test_group_zero_writable_home_and_caches(image):
    instrs = _instructions(image)
    env = " ".join(a for w, a in instrs if w == "ENV")
    home = re.search(r"\bHOME=(\S+)", env).group(1)
    cache = re.search(r"\bXDG_CACHE_HOME=(\S+)", env).group(1)
    runs = " ".join(a for w, a in instrs if w == "RUN")
    chgrp = " ".join(re.findall(r"chgrp (?:-R )?0 ([^&]+)", runs)).split()
    chmod = " ".join(re.findall(r"chmod (?:-R )?g=u ([^&]+)", runs)).split()
    for path in (home, cache, "/opt/kiln/work"):
        assert any(path == p or path.startswith(p + "/") for p in chgrp), f"{path} not chgrp 0"
        assert any(path == p or path.startswith(p + "/") for p in chmod), f"{path} not chmod g=u"
    assert ("WORKDIR", "/opt/kiln/work") in instrs


def test_installs_use_the_ci_constraints(image):
    runs = [a for w, a in _instructions(image) if w == "RUN"]
    pip = [r for r in runs if "pip install" in r]
    assert pip
    for cmd in pip:
        assert f"-c {CONSTRAINTS}" in cmd, f"pip install without the constraints file: {cmd}"
    copies = [a for w, a in _instructions(image) if w == "COPY"]
    assert any(a.startswith(f"{CONSTRAINTS} ") for a in copies)
    makefile = (REPO / "Makefile").read_text()
    assert f"CONSTRAINTS := {CONSTRAINTS}" in makefile
    install = makefile.split("$(STAMP):")[1].split("\n\n")[0]
    assert install.count("pip install") - install.count("--upgrade pip") == install.count(
        "-c $(CONSTRAINTS)"
    )


def test_no_secrets_and_labels(image):
    instrs = _instructions(image)
    for word, arg in instrs:
        if word in ("ENV", "ARG"):
            assert not SECRETISH.search(
                arg.split("=")[0] + " " + " ".join(re.findall(r"(\w+)=", arg))
            ), arg
        if word in ("COPY", "ADD"):
            assert not re.search(r"\.env|\.aws|\.kube|id_rsa|\.netrc|\.pem", arg), arg
            assert word == "COPY", "ADD fetches remote content; use COPY"
    labels = " ".join(a for w, a in instrs if w == "LABEL")
    for key in ("source", "version", "revision", "title"):
        assert f"org.opencontainers.image.{key}=" in labels
    ignore = (IMAGES / f"Containerfile.{image}.dockerignore").read_text().splitlines()
    assert ignore[1] == "*", "build context: exclude everything not copied (.venv, runs, secrets)"


def test_build_context_admits_what_is_copied(image):
    """The .dockerignore excludes everything, then re-admits exactly what COPY needs."""
    ignore = (IMAGES / f"Containerfile.{image}.dockerignore").read_text().splitlines()
    admitted = [ln[1:] for ln in ignore if ln.startswith("!")]
    for word, arg in _instructions(image):
        parts = [a for a in arg.split() if not a.startswith("--")]
        if word != "COPY" or "--from=" in arg:
            continue
        for src in parts[:-1]:
            assert any(
                src == a or a.startswith(src.rstrip("/") + "/") or fnmatch.fnmatch(src, a)
                for a in admitted
            ), f"Containerfile.{image} copies {src}, which its .dockerignore leaves out"


def test_workbench_keeps_the_openshift_ai_workbench_contract():
    """The base's entrypoint (JupyterLab on 8888 under the workbench's URL prefix), its user and
    HOME (the workbench volume, so nothing is installed there), and Kiln's venv as the kernel."""
    instrs = _instructions("workbench")
    words = [w for w, _ in instrs]
    assert "ENTRYPOINT" not in words and "CMD" not in words, "keep the base's start-notebook.sh"
    base = _args(instrs)["WORKBENCH_IMAGE"]
    assert "/odh-workbench-jupyter-" in base, f"{base}: not an OpenShift AI workbench image"
    env = " ".join(a for w, a in instrs if w == "ENV")
    assert not re.search(r"\bHOME=", env), "HOME stays the base's /opt/app-root/src (the volume)"
    # JupyterLab is started from PATH: the base's entries must stay in front of Kiln's venv.
    assert re.search(r"\bPATH=\$\{?PATH\}?:/opt/kiln/venv/bin\b", env), env
    assert [a for w, a in instrs if w == "WORKDIR"][-1] == "/opt/app-root/src"
    final = instrs[max(i for i, (w, _) in enumerate(instrs) if w == "FROM") :]
    for word, arg in final:
        if word == "COPY":
            assert not arg.split()[-1].startswith("/opt/app-root/src"), arg
    kernel = " ".join(a for w, a in final if w == "RUN" and "ipykernel install" in a)
    assert "/opt/kiln/venv/bin/python -m ipykernel install" in kernel
    assert "--name python3" in kernel and "--prefix /opt/app-root" in kernel
    notebook = "docs/notebooks/quickstart.ipynb"
    assert any(a.split()[-2] == notebook for w, a in final if w == "COPY")
    assert (REPO / notebook).is_file()


def test_constraints_pin_what_ci_installs():
    lines = [
        ln for ln in (REPO / CONSTRAINTS).read_text().splitlines() if ln and not ln.startswith("#")
    ]
    pins = {}
    for ln in lines:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.!]+)", ln)
        assert m, f"{CONSTRAINTS}: {ln!r} is not NAME==VERSION"
        pins[re.sub(r"[-_.]+", "-", m.group(1).lower())] = m.group(2)
    assert pins["ray"] == RAY_VERSION and pins["torch"] == "2.13.0"
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.\-]+", dep).group(0).lower())
        assert name in pins, (
            f"runtime dependency {name} is not pinned in {CONSTRAINTS} (make constraints)"
        )
        installed = metadata.version(name).split("+")[0]
        assert installed == pins[name], (
            f"{name}: venv has {installed}, {CONSTRAINTS} pins {pins[name]}"
        )


def test_make_images_uses_registry_and_tag():
    if not shutil.which("make"):
        pytest.skip("make not installed")
    out = subprocess.run(
        [
            "make",
            "-n",
            "images",
            "IMAGE_REGISTRY=registry.example/team",
            "IMAGE_TAG=9.9.9",
            "BUILDER=docker",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for kind in ("cpu", "gpu", "workbench"):
        assert f"docker build -f images/Containerfile.{kind}" in out
        assert f"-t registry.example/team/kiln-{kind}:9.9.9" in out
    assert "--build-arg VERSION=9.9.9" in out
    assert "--ignorefile" not in out  # docker reads Containerfile.*.dockerignore itself
    default = subprocess.run(
        ["make", "-n", "image-cpu", "BUILDER=buildah"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"-t {DEFAULT_REGISTRY}/kiln-cpu:{metadata.version('kiln')}" in default
    assert "--ignorefile images/Containerfile.cpu.dockerignore" in default
    assert Path(REPO / "images" / "Containerfile.cpu").exists()
