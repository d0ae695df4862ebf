"""host_cpu: a local Ray cluster's control plane goes to SCHED_IDLE, training threads never do.

Real processes stand in for Ray's: control-plane actors, a training worker (its process title
says RayTrainWorker), a pooled worker, a raylet and a process that is not Ray's. Linux only.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from kiln.components.pretrain import host_cpu

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux-only")

# A child that names two threads like Ray's and gloo's (via prctl), starts a compute thread,
# prints the tids, then serves stdin: "spawn" starts a grandchild with the same title and prints
# its pid; "own" demotes its own control threads from the compute thread, as a training worker
# does, and prints how many changed.
CHILD = textwrap.dedent(
    """
    import ctypes, subprocess, sys, threading, time
    from kiln.components.pretrain import host_cpu
    libc = ctypes.CDLL(None)
    tids, go = {}, threading.Event()
    def named(name):
        if name:
            libc.prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME
        tids[name or "compute"] = threading.get_native_id()
        if not name:  # the training thread: waits for "own", then demotes the rest
            go.wait()
            print(host_cpu.idle_own_control_threads(int(sys.argv[2])), flush=True)
        time.sleep(600)
    for name in ("", "grpc_global_tim", "gloo_tcp_loop"):
        threading.Thread(target=named, args=(name,), daemon=True).start()
    while len(tids) < 3:
        time.sleep(0.01)
    print(" ".join(f"{k}={v}" for k, v in tids.items()), flush=True)
    for line in sys.stdin:
        if line.strip() == "own":
            go.set()
        else:
            title = sys.argv[1]
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", title])
            print(child.pid, flush=True)
    """
)


def _start(title: str, world_size: int = 2) -> tuple[subprocess.Popen, dict[str, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, title, str(world_size)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    tids = dict(pair.split("=") for pair in proc.stdout.readline().split())
    return proc, {k: int(v) for k, v in tids.items()} | {"main": proc.pid}


def _ask(proc: subprocess.Popen, line: str) -> int:
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return int(proc.stdout.readline())


@pytest.fixture
def processes():
    started: dict[str, tuple[subprocess.Popen, dict[str, int]]] = {}

    def start(title: str, world_size: int = 2) -> dict[str, int]:
        started[title] = _start(title, world_size)
        return started[title][1]

    yield start, started
    for proc, _ in started.values():
        for pid in host_cpu.descendants(proc.pid):
            os.kill(pid, 9)
        proc.kill()
        proc.wait()


def test_driver_demotes_the_control_plane_but_not_what_starts_training(processes):
    start, started = processes
    controller = start("ray::TrainController")
    gcs = start("/venv/site-packages/ray/core/src/ray/gcs/gcs_server --log_dir=/tmp/x")
    worker = start("ray::RayTrainWorker")
    # A training worker while it runs a Train setup call (its main thread starts the training
    # thread later, which would inherit SCHED_IDLE), and a worker process not yet titled.
    in_setup = start("ray::execute._setup_torch_process_group")
    untitled = start(
        "/venv/site-packages/ray/_private/workers/default_worker.py --node-ip-address=x"
    )
    pooled = start("ray::IDLE")
    raylet = start("/venv/site-packages/ray/core/src/ray/raylet/raylet --raylet_socket_name=x")
    unknown = start("ray::SomeNewHelperActor")  # not known never to train: left alone
    bystander = start("moto_server -H 127.0.0.1")  # e.g. a server a test started
    assert host_cpu.owns_ray_cluster()
    assert sorted(host_cpu.control_plane_processes(os.getpid()).values()) == [
        "/gcs_server",
        "ray::TrainController",
    ]
    assert host_cpu.idle(host_cpu.control_plane_threads(os.getpid())) == len(controller) + len(gcs)
    assert all(host_cpu.is_idle(t) for t in [*controller.values(), *gcs.values()])
    for untouched in (worker, in_setup, untitled, pooled, raylet, unknown, bystander):
        assert not any(host_cpu.is_idle(t) for t in untouched.values())
    assert not host_cpu.is_idle(threading.get_native_id())  # the driver is not below itself

    # The policy is inherited and cannot be undone unprivileged: why spawners are never demoted.
    grandchild = _ask(started["ray::TrainController"][0], "spawn")
    assert host_cpu.is_idle(grandchild)
    assert host_cpu.idle(host_cpu.control_plane_threads(os.getpid())) == 0  # nothing left


def test_a_training_worker_demotes_its_control_threads_from_the_training_thread(processes):
    start, started = processes
    worker = start("ray::RayTrainWorker")
    assert _ask(started["ray::RayTrainWorker"][0], "own") == 2
    # Ray's task loop (the main thread) and named Ray threads go idle; the training thread and the
    # collective-communication thread keep normal priority.
    assert host_cpu.is_idle(worker["main"]) and host_cpu.is_idle(worker["grpc_global_tim"])
    assert not host_cpu.is_idle(worker["compute"])
    assert not host_cpu.is_idle(worker["gloo_tcp_loop"])


def test_a_lone_worker_demotes_its_idle_collective_threads_too(processes):
    start, started = processes
    worker = start("ray::RayTrainWorker", world_size=1)
    assert _ask(started["ray::RayTrainWorker"][0], "own") == 3
    assert host_cpu.is_idle(worker["gloo_tcp_loop"]) and not host_cpu.is_idle(worker["compute"])


def test_sweeps_back_off_while_they_find_nothing_and_speed_up_when_they_do():
    waits, wait = [], 2.0
    for changed in (True, False, False, False, False, False, True, False):
        wait = host_cpu.next_sweep_in(wait, changed, every_s=2.0, max_s=30.0)
        waits.append(wait)
    assert waits == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 2.0, 4.0]


def test_idle_control_plane_sweeps_while_the_block_runs(processes):
    start, _ = processes
    with host_cpu.idle_control_plane(every_s=0.05, max_s=0.2):
        actor = start("ray::PlacementGroupCleaner")  # appears after the block began
        deadline = time.time() + 10
        while not host_cpu.is_idle(actor["main"]) and time.time() < deadline:
            time.sleep(0.02)
        assert all(host_cpu.is_idle(t) for t in actor.values())
    assert not host_cpu.is_idle(threading.get_native_id())


def _slack_of(pid: int) -> int:
    return int(open(f"/proc/{pid}/timerslack_ns").read())


def test_processes_started_inside_slack_for_children_inherit_it_and_the_caller_gets_its_own_back():
    before = host_cpu.timer_slack()
    with host_cpu.slack_for_children(30_000_000):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert _slack_of(child.pid) == 30_000_000
        assert host_cpu.timer_slack() == before
        outside = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            assert _slack_of(outside.pid) == before
        finally:
            outside.kill()
    finally:
        child.kill()


def test_a_thread_sets_its_own_timer_slack_only():
    seen = {}

    def run():
        host_cpu.set_timer_slack(7_000_000)
        seen["thread"] = host_cpu.timer_slack()

    before = host_cpu.timer_slack()
    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen["thread"] == 7_000_000
    assert host_cpu.timer_slack() == before


def test_of_the_raylet_and_the_driver_only_rays_library_threads_are_picked(processes):
    start, _ = processes
    raylet = start("/venv/site-packages/ray/core/src/ray/raylet/raylet --raylet_socket_name=x")
    worker = start("ray::RayTrainWorker")  # a Ray-named thread too, but not in a spawner
    named, ready, done = {}, threading.Event(), threading.Event()

    def ray_like_thread():  # in this process, the driver: named like one of gRPC's pollers
        ctypes.CDLL(None).prctl(15, b"client.poll0", 0, 0, 0)  # PR_SET_NAME
        named["tid"] = threading.get_native_id()
        ready.set()
        done.wait(30)

    thread = threading.Thread(target=ray_like_thread, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        picked = set(host_cpu.spawner_library_threads(os.getpid()))
    finally:
        done.set()
        thread.join()
    assert raylet["grpc_global_tim"] in picked and named["tid"] in picked
    # Never the raylet's main thread (it starts the workers) or its other threads, never the
    # driver's main thread, never a thread of another process.
    assert not {raylet["main"], raylet["compute"], raylet["gloo_tcp_loop"]} & picked
    assert threading.get_native_id() not in picked
    assert not set(worker.values()) & picked
