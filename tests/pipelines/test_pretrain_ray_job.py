"""The pretrain step with a Ray address: a Ray job through the Jobs API of a real local Ray head,
token shards and outputs staged on a "shared volume" (KILN_SHARED_DIR), the result copied back.

The head is `ray start --head --block` on 127.0.0.1 (fixture `ray_head` in tests/conftest.py),
stopped by signalling its own process session, so no other Ray on the machine is touched. It
starts after the secret canary (and S3 credentials) are set, so it inherits them, as Ray pods get
the data-connection Secret; the submitted jobs must carry no secret in their stored info.
"""

import json
import os
import urllib.request

import pytest

from kiln.components.common.config import load_config
from kiln.components.pretrain.ray_launch import JOB_ENV
from kiln.components.pretrain.runtime import read_train_log
from kiln.components.pretrain.step import pretrain_step
from kiln.components.tokenization import tokenize
from kiln.pipelines.corpus import help_topics

pytestmark = pytest.mark.ray


def assert_jobs_carry_no_secret(head: str, canary) -> None:
    """Every job on the head: its stored info (runtime_env, metadata, all of it) and the
    dashboard's job list (client and HTTP) never contain the canary; only JOB_ENV is passed."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(head)
    jobs = client.list_jobs()
    assert jobs, "no job was submitted"
    canary.assert_absent(repr(jobs), "JobSubmissionClient.list_jobs()")
    for job in jobs:
        info = client.get_job_info(job.submission_id)
        canary.assert_absent(repr(info), f"get_job_info({job.submission_id})")
        canary.assert_absent(json.dumps(info.runtime_env or {}), "the job's runtime_env")
        canary.assert_absent(json.dumps(info.metadata or {}), "the job's metadata")
        assert set((info.runtime_env or {}).get("env_vars", {})) <= set(JOB_ENV)
    with urllib.request.urlopen(f"{head}/api/jobs/", timeout=30) as reply:
        listed = reply.read().decode()
    assert "kiln train" in listed  # the list the dashboard shows holds the jobs checked above
    canary.assert_absent(listed, "the dashboard's job list (GET /api/jobs/)")


@pytest.fixture
def tokens(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(t for _, t in help_topics()))
    cfg = load_config("tiny", overrides=["tokenizer.vocab_size=512", "tokenizer.workers=1"])
    tokenize(text, tmp_path / "tokens", cfg.tokenizer)
    return tmp_path / "tokens"


def test_ray_address_submits_a_job_through_the_shared_dir(
    secret_canary, ray_head, tokens, tmp_path, monkeypatch
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
            f"dist.ray_address={ray_head}",
        ],
    )
    out = tmp_path / "artifact"  # what KFP would give the step: not visible to the cluster
    summary = pretrain_step(str(tokens), str(out), cfg.to_json(), run_id="run-42")
    job_out = shared / "kiln-jobs" / "run-42" / "train"
    assert (shared / "kiln-jobs" / "run-42" / "tokens" / "manifest.json").exists()
    assert (job_out / "model" / "model.safetensors").exists()  # written by the job on the head
    assert summary["steps"] == 4
    assert (out / "model" / "model.safetensors").exists()  # copied back and exported
    assert_jobs_carry_no_secret(ray_head, secret_canary)


def test_ray_job_reads_shards_from_s3_writes_checkpoints_to_s3_and_resumes(
    secret_canary, s3_server, ray_head, tokens, tmp_path, monkeypatch
):
    """With real S3 and no shared volume: shards go up to S3 (verified), the job's workers read
    them from S3 and checkpoint to S3, and a re-run of the step resumes from that checkpoint.
    The S3 secret (the canary) reaches the job from the head's environment, never from the job."""
    from kiln.components.common import storage

    monkeypatch.delenv("KILN_SHARED_DIR", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the workers' shard cache lands here
    bucket = os.environ["AWS_S3_BUCKET"]

    def config(steps: int):
        return load_config(
            "tiny",
            overrides=[
                f"train.max_steps={steps}", "train.eval_every=0", "train.log_every=1",
                "train.ckpt_every=2", "tracking.backend=none", "dist.workers=1",
                "dist.cpus_per_worker=1", f"dist.ray_address={ray_head}",
            ],
        )  # fmt: skip

    cfg = config(4)
    cfg.train.stop_after_steps = 2  # the first attempt stops (as if the pod were evicted) ...
    first = tmp_path / "attempt1"
    pretrain_step(str(tokens), str(first), cfg.to_json(), run_id="run-s3")
    prefix = f"s3://{bucket}/kiln/runs/run-s3/train"
    assert storage.is_committed(f"{prefix}/tokens")
    keys = storage.list_files(f"{prefix}/ray/train")
    assert any(k.endswith("step_2/model.safetensors") for k in keys), keys
    # ... and a re-run of the step (a fresh pod: new local dir) resumes from the S3 checkpoint.
    second = tmp_path / "attempt2"
    summary = pretrain_step(str(tokens), str(second), config(4).to_json(), run_id="run-s3")
    assert summary["steps"] == 4
    assert sorted(read_train_log(second)) == [1, 2, 3, 4]
    assert any(
        k.endswith("step_4/model.safetensors") for k in storage.list_files(f"{prefix}/ray/train")
    )
    assert (second / "model" / "model.safetensors").exists()
    assert_jobs_carry_no_secret(ray_head, secret_canary)
