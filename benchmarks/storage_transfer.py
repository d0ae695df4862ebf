"""Benchmark: Kiln's storage upload/download vs plain boto3 with its default TransferConfig.

Run on demand (never from tests):

    .venv/bin/python benchmarks/storage_transfer.py                      # local moto server
    .venv/bin/python benchmarks/storage_transfer.py --size-mb 512 --endpoint http://minio:9000

Without --endpoint a `moto_server` is started on 127.0.0.1 (an in-memory Python server: the
figures then measure client overhead more than a network; use a real MinIO/Ceph endpoint with
AWS_* credentials in the environment for numbers that matter). Kiln's path also hashes every
byte (sha256 before upload, after download), which the peer does not; the ratio includes it.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kiln.components.common import storage  # noqa: E402
from kiln.components.common.storage import s3  # noqa: E402


def _start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exe = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            return proc, endpoint
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto_server did not start")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=256, help="size of the test file in MiB")
    ap.add_argument("--endpoint", default="", help="S3 endpoint (default: start moto locally)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per variant; the best is kept")
    args = ap.parse_args()

    proc = None
    if not args.endpoint:
        proc, args.endpoint = _start_moto()
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    os.environ["AWS_S3_ENDPOINT"] = args.endpoint
    bucket = os.environ.get("AWS_S3_BUCKET") or f"kiln-bench-{uuid.uuid4().hex[:8]}"
    os.environ["AWS_S3_BUCKET"] = bucket
    try:
        settings = storage.S3Settings.from_env()
        client = s3.client(settings)
        if proc is not None:
            client.create_bucket(Bucket=bucket)
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "blob.bin"
            with open(src, "wb") as f:
                for _ in range(args.size_mb):
                    f.write(os.urandom(1 << 20))
            uri, out = f"s3://{bucket}/bench/blob.bin", Path(tmp) / "back.bin"
            key = "bench/peer.bin"
            variants = {
                "boto3 defaults (peer)": (
                    lambda: client.upload_file(str(src), bucket, key),
                    lambda: client.download_file(bucket, key, str(out)),
                ),
                "kiln storage (sha256 + verify)": (
                    lambda: storage.upload_file(src, uri, settings),
                    lambda: storage.download_file(uri, out, settings=settings),
                ),
            }
            results = {}
            for name, (up, down) in variants.items():
                t_up = min(_timed(up) for _ in range(args.repeat))
                t_down = min(_timed(down) for _ in range(args.repeat))
                results[name] = (args.size_mb / t_up, args.size_mb / t_down)
                print(f"{name:32} upload {results[name][0]:8.1f} MiB/s   "
                      f"download {results[name][1]:8.1f} MiB/s")  # fmt: skip
            peer, kiln = results["boto3 defaults (peer)"], results["kiln storage (sha256 + verify)"]
            print(f"ratio kiln/peer: upload {kiln[0] / peer[0]:.2f}x, download {kiln[1] / peer[1]:.2f}x"
                  f"  ({args.size_mb} MiB, part {settings.part_size_mb} MiB, "
                  f"{settings.max_concurrency} parts in flight, endpoint {args.endpoint})")  # fmt: skip
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
