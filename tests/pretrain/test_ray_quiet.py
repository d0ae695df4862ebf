"""The private local Ray that `kiln run`'s pretrain step starts says nothing the user cannot act
on: its token authentication is chosen in the steps' environment before Ray is imported (as Ray
documents), so Ray does not warn that it chose it by itself."""

import os
import subprocess
import sys

import pytest

from kiln.pipelines.local import local_env

pytestmark = pytest.mark.ray

START_AND_STOP = """
import os
import ray
from kiln.components.pretrain.ray_launch import ensure_ray
assert ensure_ray()
print("auth mode", os.environ["RAY_AUTH_MODE"])
ray.shutdown()
"""


def test_steps_start_their_private_ray_with_token_auth_and_no_warning(tmp_path, monkeypatch):
    for var in ("RAY_AUTH_MODE", "RAY_ADDRESS"):  # as a user's shell: nothing Ray-specific set
        monkeypatch.delenv(var, raising=False)
    step_env = local_env(tmp_path)
    assert step_env["RAY_ADDRESS"] == "local" and step_env["RAY_AUTH_MODE"] == "token"
    env = {**os.environ, **step_env, "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(
        [sys.executable, "-c", START_AND_STOP], env=env, capture_output=True, text=True, timeout=180
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "auth mode token" in done.stdout
    assert "Token authentication" not in output and "WARNING" not in output


def test_a_users_ray_settings_are_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert "RAY_AUTH_MODE" not in local_env(tmp_path)  # the cluster decides
    monkeypatch.setenv("RAY_ADDRESS", "local")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert local_env(tmp_path)["RAY_AUTH_MODE"] == "disabled"


def test_a_dead_clusters_address_note_is_named(tmp_path, monkeypatch):
    """A killed `ray start` leaves Ray's address note behind; every Ray Train run then waits
    ~12 s at shutdown. The note is named (with how to remove it) only when nothing listens at
    its address."""
    import socket

    from kiln.components.pretrain.ray_launch import stale_ray_address_note

    note = tmp_path / "ray" / "ray_current_cluster"
    assert stale_ray_address_note(note) is None  # no note
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = f"127.0.0.1:{listening.getsockname()[1]}"
        note.parent.mkdir()
        note.write_text(address)
        assert stale_ray_address_note(note) is None  # a live cluster's
    assert stale_ray_address_note(note) == (note, address)  # now nothing listens there
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    assert stale_ray_address_note() == (note, address)  # found where Ray writes it
    note.write_text("not an address")
    assert stale_ray_address_note(note) is None
