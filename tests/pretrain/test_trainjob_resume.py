"""TrainJob nodes train, and resume other launchers' checkpoints (and they theirs), bit-exactly.

A TrainJob is run here as its pods would run it: the body's own container command (the SDK's
`bash -c` script that writes `kiln_train_node` to a file and starts `torchrun` on it), once per
node, with the env the Trainer's torch runtime gives a node (PET_NNODES, PET_NODE_RANK,
PET_MASTER_ADDR, PET_MASTER_PORT, PET_NPROC_PER_NODE) and the body's env values; gloo over
loopback. (The SDK's local process backend cannot do this offline: it builds a fresh venv without
this one's packages and pip-installs torch into it; docs/platform.md.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kiln.components.pretrain import pretrain
from kiln.components.pretrain.runtime import TRAIN_LOG, read_train_log
from kiln.components.pretrain.train_log import read_records
from kiln.components.pretrain.trainjob_launch import trainjob_body


def run_nodes(body: dict, workdir: Path, threads: int = 1, timeout_s: float = 120) -> None:
    """Run the TrainJob `body` on this machine, one process tree per node, as its pods would."""
    trainer = body["spec"]["trainer"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {e["name"]: e["value"] for e in trainer["env"] if "value" in e}  # not the Secret's
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # its torchrun
        GLOO_SOCKET_IFNAME="lo",
        OMP_NUM_THREADS=str(threads),
        PET_NNODES=str(trainer["numNodes"]),
        PET_NPROC_PER_NODE=str(trainer["numProcPerNode"]),
        PET_MASTER_ADDR="127.0.0.1",
        PET_MASTER_PORT=str(port),
    )
    nodes = []
    for rank in range(trainer["numNodes"]):
        cwd = workdir / f"node-{rank}"  # the pod's working directory: the SDK writes the script
        cwd.mkdir(parents=True, exist_ok=True)
        log = open(cwd / "log.txt", "w")  # noqa: SIM115 - closed below
        node_env = {**os.environ, **env, "PET_NODE_RANK": str(rank)}
        proc = subprocess.Popen(  # its own session: torchrun and its worker stop with it
            trainer["command"],
            cwd=cwd,
            env=node_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        nodes.append((proc, log, cwd))
    deadline = time.monotonic() + timeout_s
    try:  # until all exit 0; one that fails would leave the others waiting for it
        while True:
            codes = [proc.poll() for proc, _, _ in nodes]
            failed = [
                (c, cwd) for c, (_, _, cwd) in zip(codes, nodes, strict=True) if c not in (None, 0)
            ]
            assert not failed, "\n".join(
                f"{cwd.name} exited {c}:\n{(cwd / 'log.txt').read_text()[-3000:]}"
                for c, cwd in failed
            )
            if all(c == 0 for c in codes):
                return
            assert time.monotonic() < deadline, f"nodes still running after {timeout_s} s"
            time.sleep(0.2)
    finally:
        for proc, log, _ in nodes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()


def weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / f"step_{step}" / "model.safetensors")


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def steps_since(run: Path, start: float) -> list[int]:
    """The steps of `run`'s train log written after `start`: what the last launcher trained
    (a launcher that ignored the newer checkpoint would have trained them all again)."""
    return [r["step"] for r in read_records(run / TRAIN_LOG) if r["time"] >= start]


def test_trainjob_node_and_plain_process_resume_each_other_bit_identically(
    tokens_dir, tiny_cfg, tmp_path
):
    tiny_cfg.dist.launcher = "trainjob"  # one node, one process: a plain process's twin
    threads = torch.get_num_threads()  # as this process trains: same kernels, same bits
    straight = pretrain(tiny_cfg, tokens_dir, tmp_path / "straight")

    tiny_cfg.train.stop_after_steps = 10  # the TrainJob is interrupted at step 10 ...
    run_nodes(
        trainjob_body(tiny_cfg, str(tokens_dir), str(tmp_path / "a")), tmp_path / "a-pods", threads
    )
    tiny_cfg.train.stop_after_steps = 0  # ... and a plain process finishes the run
    resumed = pretrain(tiny_cfg, tokens_dir, tmp_path / "a", resume=True)
    assert resumed.losses.keys() == set(range(11, 21))
    assert read_train_log(tmp_path / "a") == straight.losses

    tiny_cfg.train.stop_after_steps = 10  # a plain process is interrupted ...
    pretrain(tiny_cfg, tokens_dir, tmp_path / "b")
    tiny_cfg.train.stop_after_steps = 0  # ... and a TrainJob finishes the run
    start = time.time()
    run_nodes(
        trainjob_body(tiny_cfg, str(tokens_dir), str(tmp_path / "b")), tmp_path / "b-pods", threads
    )
    assert steps_since(tmp_path / "b", start) == list(range(11, 21))
    assert read_train_log(tmp_path / "b") == straight.losses
    reference = weights(tmp_path / "straight", 20)
    assert same_weights(weights(tmp_path / "a", 20), reference)
    assert same_weights(weights(tmp_path / "b", 20), reference)


@pytest.mark.ray
def test_two_trainjob_nodes_and_ray_workers_resume_each_other_bit_identically_with_muon(
    tokens_dir, tiny_cfg, tmp_path, monkeypatch
):
    ray = pytest.importorskip("ray")
    from kiln.components.common.config import with_changes
    from kiln.components.pretrain.ray_launch import copy_final_checkpoint, launch

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    tiny_cfg.dist.launcher, tiny_cfg.dist.workers, tiny_cfg.train.max_steps = "trainjob", 2, 30
    # Muon under DDP, as `mini` and `small` ship it: its momentum and AdamW's moments both cross
    # launchers (the 2-worker Ray tests cover AdamW, test_train.py Muon in one process).
    tiny_cfg.optim.name = "muon"
    straight, run = tmp_path / "straight", tmp_path / "run"
    run_nodes(trainjob_body(tiny_cfg, str(tokens_dir), str(straight)), tmp_path / "pods-0")
    on_ray = with_changes(tiny_cfg, {"dist.launcher": "ray", "train.stop_after_steps": 10})
    try:
        launch(on_ray, tokens_dir, run)  # Ray: steps 1-10 (its run dir: run/ray/train)
        tiny_cfg.train.stop_after_steps = 10
        body = trainjob_body(tiny_cfg, str(tokens_dir), str(run))
        start = time.time()
        run_nodes(body, tmp_path / "pods-1")  # the TrainJob: 11-20 from Ray's step_10
        assert steps_since(run, start) == list(range(11, 21))
        start = time.time()
        result = launch(with_changes(on_ray, {"train.stop_after_steps": 0}), tokens_dir, run, True)
        assert steps_since(run, start) == list(range(21, 31))  # not Ray's own step_10
    finally:
        ray.shutdown()
    assert read_train_log(run) == read_train_log(straight)  # 30 steps, bit for bit
    copy_final_checkpoint(result, run)  # Ray's final: 21-30 from the TrainJob's step_20
    assert same_weights(weights(run, 30), weights(straight, 30))
    state = torch.load(run / "checkpoints/step_30/optimizer.pt", weights_only=True)["state"]
    assert "momentum_buffer" in state["layers.0.mlp.gate_up_proj.weight"]  # Muon's, not AdamW's
