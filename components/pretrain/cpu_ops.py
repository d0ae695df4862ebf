"""Fused float32 CPU kernels (csrc/cpu_kernels.cpp), compiled on first use and cached.

    ops = cpu_ops.load()          # the extension module, or None where it cannot be built
    if ops is not None: y, rstd = ops.rms_norm_forward(x, w, eps)

Built with torch's C++ extension tooling into torch's extensions cache (TORCH_EXTENSIONS_DIR,
default ~/.cache/torch_extensions), once per machine and instruction set (the build is named after
it, so a cache shared between unlike machines never runs code the CPU lacks). Needs a C++
compiler; without one, or with KILN_CPU_KERNELS=0, `load()` returns None and the model uses its
torch-op versions (kernels.py), which compute the same thing more slowly.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import platform
import shutil
from pathlib import Path

import torch

log = logging.getLogger("kiln.kernels")
SOURCE = Path(__file__).with_name("csrc") / "cpu_kernels.cpp"
ENV = "KILN_CPU_KERNELS"

# torch's CPU capability → (compiler flags, ATen's macro naming the Vectorized<float> variant)
_ISA = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"],
    "AVX2": ["-mavx2", "-mfma", "-mf16c"],
}


def _isa() -> str:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "DEFAULT"
    capability = torch.backends.cpu.get_cpu_capability()
    return capability if capability in _ISA else "DEFAULT"


def _put_ninja_on_path() -> None:
    """torch runs `ninja` from PATH; the `ninja` package's copy serves when a venv is not activated."""
    if shutil.which("ninja"):
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])


def _import(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def load():
    """The compiled kernels, or None (disabled, no compiler, or the build failed: logged once)."""
    if os.environ.get(ENV, "1") == "0":
        return None
    isa = _isa()
    flags = ["-O3", "-fopenmp", *(_ISA.get(isa, []))]
    if isa != "DEFAULT":
        flags += [f"-DCPU_CAPABILITY={isa}", f"-DCPU_CAPABILITY_{isa}"]
    # The name carries what the binary depends on, so a build on disk is only ever this one.
    digest = hashlib.sha256(
        SOURCE.read_bytes() + " ".join(flags).encode() + torch.__version__.encode()
    ).hexdigest()[:12]
    name = f"kiln_cpu_kernels_{isa.lower()}_{digest}"
    try:
        from torch.utils import cpp_extension

        build_dir = Path(cpp_extension._get_build_directory(name, verbose=False))
        built = build_dir / f"{name}.so"
        if built.exists() and not (build_dir / "lock").exists():
            # Built before and no build under way: import it directly. (torch's load would
            # re-run ninja to check, ~3 s in every process that trains.)
            return _import(name, built)
        if not built.exists():
            log.info("compiling the fused CPU kernels (%s; once per machine, ~35 s)", isa)
        _put_ninja_on_path()
        return cpp_extension.load(
            name=name,
            sources=[str(SOURCE)],
            extra_cflags=flags,
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as e:  # noqa: BLE001 - any build failure means: use the torch-op versions
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        log.warning("fused CPU kernels unavailable (%s); using the torch-op versions", first)
        return None
