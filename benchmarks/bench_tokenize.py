"""Benchmark: `kiln tokenize` encoding vs the llm.c/nanoGPT recipe (tiktoken GPT-2, 2-process pool).

    .venv/bin/python benchmarks/bench_tokenize.py [--mb 120] [--vocab 32768] [--workers 2]

Both sides encode the same ≥100 MB of Python sources from site-packages, in the same run, with
two processes, writing uint16 shards:
- kiln: `tokenize` with a byte-level BPE trained first on part of the corpus (training time is
  reported separately and excluded); the measured time covers pool start, reading parquet,
  encoding, shard writing with sha256 and the manifest.
- peer: llm.c `dev/data/fineweb.py` style — parent iterates documents, `Pool(2).imap(tokenize,
  docs, chunksize=16)`, tiktoken `gpt2` `encode_ordinary` with `<|endoftext|>` before each
  document, uint16 arrays written to shards. GPT-2 ranks come from the `openai-whisper` sdist
  (`whisper/assets/gpt2.tiktoken`), fetched with `pip download` once into ~/.cache/kiln.
Then the kiln shards are proven identical to `tokenizers`' own ids on the whole corpus.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import shutil
import site
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kiln.components.common.config import TokenizerConfig  # noqa: E402
from kiln.components.ingest.writer import ShardWriter  # noqa: E402
from kiln.components.tokenization import tokenize  # noqa: E402
from kiln.components.tokenization.bpe import train_bpe  # noqa: E402
from kiln.components.tokenization.engine import Encoder  # noqa: E402
from kiln.components.tokenization.manifest import read_manifest, shard_paths  # noqa: E402
from kiln.components.tokenization.shards import open_shard  # noqa: E402

CACHE = Path.home() / ".cache" / "kiln"


def _roots() -> list[Path]:
    roots = {Path(sysconfig.get_paths()["purelib"]), *map(Path, site.getsitepackages())}
    return sorted(r for r in roots if r.is_dir())


def python_sources(n_bytes: int, suffixes: tuple[str, ...] = (".py",)) -> list[str]:
    """Texts of source files (one document each) until `n_bytes` UTF-8 bytes are gathered."""
    docs, total = [], 0
    for root in _roots():
        for path in sorted(root.rglob("*")):
            if path.suffix not in suffixes or not path.is_file():
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if len(text) < 1024:
                continue
            docs.append(text)
            total += len(text.encode("utf-8"))
            if total >= n_bytes:
                return docs
    return docs


def gpt2_ranks_file() -> Path:
    """whisper/assets/gpt2.tiktoken from the openai-whisper source package (cached)."""
    target = CACHE / "gpt2.tiktoken"
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "openai-whisper==20250625",
                "-d",
                tmp,
            ],
            check=True,
            capture_output=True,
        )
        sdist = next(Path(tmp).glob("openai_whisper-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            member = next(
                m for m in tar.getmembers() if m.name.endswith("whisper/assets/gpt2.tiktoken")
            )
            target.write_bytes(tar.extractfile(member).read())
    return target


def cpu_seconds() -> float:
    """User + system CPU time of this process and its reaped children (the pool workers)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def write_dataset(docs: list[str], root: Path) -> None:
    """An ingest dataset written by ingest's own writer: train/ (all docs) and a small val/."""
    for split, part in (("train", docs), ("val", docs[:50])):
        writer = ShardWriter(root / split, 128 << 20)
        for i, text in enumerate(part):
            writer.add(f"{split}{i}", text, "py")
        writer.close()


_enc = None


def _peer_init(ranks_path: str) -> None:
    global _enc
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(ranks_path)
    from tiktoken_ext.openai_public import r50k_pat_str as pat  # tiktoken's own gpt2 regex

    _enc = tiktoken.Encoding(
        "gpt2",
        pat_str=pat,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
        explicit_n_vocab=50257,
    )


def _peer_tokenize(doc: str) -> np.ndarray:
    tokens = [50256] + _enc.encode_ordinary(doc)  # as llm.c: eot first, then the document
    return np.array(tokens, dtype=np.uint16)


def run_peer(docs: list[str], out: Path, ranks: Path, workers: int, shard_size: int = 10**8) -> int:
    out.mkdir(parents=True)
    total, shard, buf, n = 0, 0, np.empty(shard_size, np.uint16), 0
    with mp.get_context("spawn").Pool(
        workers, initializer=_peer_init, initargs=(str(ranks),)
    ) as pool:
        for tokens in pool.imap(_peer_tokenize, docs, chunksize=16):
            if n + len(tokens) >= shard_size:
                take = shard_size - n
                buf[n:] = tokens[:take]
                buf.tofile(out / f"peer_{shard:06d}.bin")
                shard, n, tokens = shard + 1, 0, tokens[take:]
            buf[n : n + len(tokens)] = tokens
            n += len(tokens)
            total += len(tokens)
    buf[:n].tofile(out / f"peer_{shard:06d}.bin")
    return total


def _hf_ids(args: tuple[str, list[str]]) -> np.ndarray:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(args[0])
    enc = Encoder(tok, "hf")
    ids = enc.encode_batch(args[1])
    return np.concatenate([np.concatenate([[0], row]) for row in ids]).astype(np.uint16)


def prove_identical(out: Path, docs: list[str], workers: int) -> tuple[bool, int]:
    """Kiln's train shards == tokenizers' ids of every document (with EOT before each)."""
    ours = np.concatenate([np.asarray(open_shard(p)) for p in shard_paths(out, "train")])
    tok_str = (out / "tokenizer.json").read_text()
    batches = [(tok_str, docs[i : i + 256]) for i in range(0, len(docs), 256)]
    with mp.get_context("spawn").Pool(workers) as pool:
        ref = np.concatenate(pool.map(_hf_ids, batches))
    return bool(ours.size == ref.size and np.array_equal(ours, ref)), int(ref.size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=120, help="corpus size in MB of UTF-8 text")
    ap.add_argument("--vocab", type=int, default=32768, help="vocabulary of the trained BPE")
    ap.add_argument("--train-mb", type=float, default=20, help="MB of text the BPE is trained on")
    ap.add_argument("--workers", type=int, default=2, help="processes on both sides")
    ap.add_argument("--repeat", type=int, default=2, help="rounds per side; the best is kept")
    ap.add_argument("--skip-proof", action="store_true", help="skip the tokenizers id cross-check")
    args = ap.parse_args()
    ranks = gpt2_ranks_file()
    docs = python_sources(int(args.mb * 1e6))
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    print(f"corpus: {len(docs):,} Python files from site-packages, {nbytes / 1e6:.1f} MB")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_dataset(docs, tmp / "data")
        t = time.time()
        budget = int(args.train_mb * 1e6)
        sample, used = [], 0
        for d in docs[:: max(1, int(nbytes // budget))]:
            sample.append(d)
            used += len(d)
        tok = train_bpe(sample, args.vocab)
        tok.save(str(tmp / "tokenizer.json"))
        print(
            f"BPE {args.vocab} trained on {used / 1e6:.1f} MB in {time.time() - t:.1f}s (excluded)"
        )

        cfg = TokenizerConfig(workers=args.workers)
        kiln_s = peer_s = kiln_cpu = peer_cpu = float("inf")
        for rep in range(args.repeat):  # interleaved, best of N: the machine is shared
            shutil.rmtree(tmp / "peer", ignore_errors=True)
            t, c = time.time(), cpu_seconds()
            manifest = tokenize(
                tmp / "data", tmp / "kiln", cfg, tokenizer_json=tmp / "tokenizer.json"
            )
            kiln_s, kiln_cpu = min(kiln_s, time.time() - t), min(kiln_cpu, cpu_seconds() - c)
            t, c = time.time(), cpu_seconds()
            peer_tokens = run_peer(docs + docs[:50], tmp / "peer", ranks, args.workers)
            peer_s, peer_cpu = min(peer_s, time.time() - t), min(peer_cpu, cpu_seconds() - c)
            print(
                f"  round {rep + 1} (best so far): kiln {kiln_s:.2f}s wall, {kiln_cpu:.2f} CPU-s; "
                f"peer {peer_s:.2f}s wall, {peer_cpu:.2f} CPU-s"
            )
        kiln_tokens = manifest.tokens("train") + manifest.tokens("val")
        kiln_bytes = manifest.extra["text_bytes"]
        peer_bytes = nbytes + sum(len(d.encode("utf-8")) for d in docs[:50])

        kmbs, pmbs = kiln_bytes / 1e6 / kiln_s, peer_bytes / 1e6 / peer_s
        print(
            f"kiln tokenize ({manifest.extra['engine']}, vocab {manifest.vocab_size}): "
            f"{kiln_bytes / 1e6:.1f} MB, {kiln_tokens:,} tokens in {kiln_s:.1f}s = {kmbs:.1f} MB/s, "
            f"{kiln_tokens / kiln_s:,.0f} tokens/s (encode loop alone {manifest.extra['encode_seconds']}s)"
        )
        print(
            f"peer tiktoken gpt2 Pool({args.workers}): {peer_bytes / 1e6:.1f} MB, {peer_tokens:,} tokens "
            f"in {peer_s:.1f}s = {pmbs:.1f} MB/s, {peer_tokens / peer_s:,.0f} tokens/s"
        )
        print(f"ratio kiln/peer (MB/s): {kmbs / pmbs:.2f}")
        kc, pc = kiln_bytes / 1e6 / kiln_cpu, peer_bytes / 1e6 / peer_cpu
        print(
            f"CPU cost (parent + workers, immune to other load): kiln {kc:.1f} MB per CPU-s, "
            f"peer {pc:.1f} MB per CPU-s, ratio {kc / pc:.2f}"
        )
        read_manifest(tmp / "kiln", verify=True)
        print("kiln shards: sha256 verified against manifest.json")
        if not args.skip_proof:
            t = time.time()
            same, n = prove_identical(tmp / "kiln", docs, args.workers)
            print(
                f"ids identical to tokenizers on the whole train split ({n:,} tokens): {same} "
                f"({time.time() - t:.1f}s)"
            )


if __name__ == "__main__":
    main()
