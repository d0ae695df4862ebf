"""The pretrain step with a Ray address: a Ray job through the Jobs API of a real local Ray head,
token shards and outputs staged on a "shared volume" (KILN_SHARED_DIR), the result copied back.

The head is started by `ray.init` in a child process of its own (dashboard = Jobs API on
127.0.0.1) and stopped by ending that process, so no other Ray on the machine is touched.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from components.common.config import load_config
from components.pretrain.step import pretrain_step
from components.tokenization.pipeline import run_tokenize
from pipelines.corpus import help_topics

pytestmark = pytest.mark.ray

_HEAD = """
import sys, time, ray
ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
         dashboard_port=int(sys.argv[1]), _node_ip_address="127.0.0.1")
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_jobs_api(tmp_path):
    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)  # `kiln` must be on the head's PATH
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "GLOO_SOCKET_IFNAME": "lo",
    }
    env.pop("RAY_ADDRESS", None)
    log = open(tmp_path / "head.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-c", _HEAD, str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/version", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"Ray head did not start:\n{(tmp_path / 'head.log').read_text()}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def tokens(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(t for _, t in help_topics()))
    cfg = load_config("tiny", overrides=["tokenizer.vocab_size=512", "tokenizer.workers=1"])
    run_tokenize(text, tmp_path / "tokens", cfg.tokenizer)
    return tmp_path / "tokens"


def test_ray_address_submits_a_job_through_the_shared_dir(
    ray_jobs_api, tokens, tmp_path, monkeypatch
):
    shared = tmp_path / "shared"
    monkeypatch.setenv("KILN_SHARED_DIR", str(shared))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    cfg = load_config(
        "tiny",
        overrides=[
            "train.max_steps=4",
            "train.eval_every=0",
            "train.log_every=1",
            "tracking.backend=none",
            "dist.cpus_per_worker=1",
            f"dist.ray_address={ray_jobs_api}",
        ],
    )
    out = tmp_path / "artifact"  # what KFP would give the step: not visible to the cluster
    summary = pretrain_step(str(tokens), str(out), cfg.to_json(), run_id="run-42")
    job_out = shared / "kiln-jobs" / "run-42" / "train"
    assert (shared / "kiln-jobs" / "run-42" / "tokens" / "manifest.json").exists()
    assert (job_out / "model" / "model.safetensors").exists()  # written by the job on the head
    assert summary["steps"] == 4
    assert (out / "model" / "model.safetensors").exists()  # copied back and exported
