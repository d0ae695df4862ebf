"""Benchmark: `kiln ingest` throughput with every filter and both dedups, 1 vs 2 processes.

    .venv/bin/python benchmarks/bench_ingest.py [--mb 110] [--files 12]

Corpus (built from text on this machine, nothing downloaded): the prose files of site-packages
(.md/.rst/.txt) topped up to `--mb` with the docstrings of its Python files (one document per
file), then with Python sources themselves, spread over `--files` .jsonl.zst files,
plus 5% exact duplicates and 5% near duplicates (a few words changed) in other files. Each run is
a fresh subprocess so its peak RSS (parent, and the largest worker) is its own. Reported: MB/s of
decompressed input, docs/s, kept / filtered / duplicates, peak RSS, and the 2-vs-1 speed-up.
There is no external peer here: the figures are for capacity planning (how many cores a corpus
needs), next to `bench_tokenize.py` which does compare with a peer.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_tokenize import _roots, python_sources  # noqa: E402

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {repo!r})
from kiln.components.common.config import IngestConfig
from kiln.components.ingest import ingest
cfg = IngestConfig(workers={workers}, val_fraction=0.01)
t = time.time()
stats = ingest([{inp!r}], {out!r}, cfg)
wall = time.time() - t
self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print("RESULT " + json.dumps(dict(wall=wall, docs=stats.documents_in, bytes=stats.bytes_in,
    kept=stats.kept, filtered=sum(stats.filtered.values()), exact=stats.duplicates_exact,
    near=stats.duplicates_near, parent_rss_mb=self_rss, worker_rss_mb=child_rss)))
"""


_DOCSTRING = re.compile(r'"""(.*?)"""', re.S)


def docstrings(n_bytes: int) -> list[str]:
    """Per source file, its triple-quoted strings joined: English prose about code."""
    docs, total = [], 0
    for root in _roots():
        for path in sorted(root.rglob("*.py")):
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            doc = "\n\n".join(s.strip() for s in _DOCSTRING.findall(text) if len(s) > 40)
            if len(doc) < 1024:
                continue
            docs.append(doc)
            total += len(doc.encode("utf-8"))
            if total >= n_bytes:
                return docs
    return docs


def build(root: Path, mb: float, files: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    prose = python_sources(int(mb * 1e6), suffixes=(".md", ".rst", ".txt"))
    have = sum(len(d.encode()) for d in prose)
    docs = prose + (docstrings(int(mb * 1e6 - have)) if have < mb * 1e6 else [])
    have = sum(len(d.encode()) for d in docs)
    code = python_sources(int(mb * 1e6 - have)) if have < mb * 1e6 else []  # top up
    docs += code
    n = len(docs)
    extra = [rng.choice(docs) for _ in range(n // 20)]  # exact duplicates
    for _ in range(n // 20):  # near duplicates: a few words replaced
        words = rng.choice(docs).split(" ")
        for _ in range(3):
            words[rng.randrange(len(words))] = "CHANGED"
        extra.append(" ".join(words))
    docs += extra
    rng.shuffle(docs)
    root.mkdir(parents=True)
    cctx = zstandard.ZstdCompressor(level=3)
    total = 0
    for f in range(files):
        part = docs[f::files]
        body = "".join(json.dumps({"text": d}) + "\n" for d in part).encode()
        total += len(body)
        (root / f"part-{f:03d}.jsonl.zst").write_bytes(cctx.compress(body))
    print(
        f"corpus: {len(prose):,} prose files + {n - len(prose) - len(code):,} docstring documents + "
        f"{len(code):,} Python files + "
        f"{len(extra):,} duplicates = {len(docs):,} docs, {total / 1e6:.1f} MB of jsonl "
        f"in {files} .jsonl.zst files"
    )
    return total


def run(repo: Path, inp: Path, out: Path, workers: int) -> dict:
    code = CHILD.format(repo=str(repo), workers=workers, inp=str(inp), out=str(out))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=110, help="corpus size in MB of text")
    ap.add_argument("--files", type=int, default=12, help="number of input files")
    args = ap.parse_args()
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build(tmp / "in", args.mb, args.files)
        results = {}
        for workers in (1, 2):
            r = run(repo, tmp / "in", tmp / f"out{workers}", workers)
            results[workers] = r
            worker = f"{r['worker_rss_mb']:.0f} MB" if workers > 1 else "n/a (in-process)"
            print(
                f"workers={workers}: {r['bytes'] / 1e6:.1f} MB, {r['docs']:,} docs in {r['wall']:.1f}s = "
                f"{r['bytes'] / 1e6 / r['wall']:.2f} MB/s, {r['docs'] / r['wall']:,.0f} docs/s; kept {r['kept']:,}, "
                f"filtered {r['filtered']:,}, duplicates exact {r['exact']:,} near {r['near']:,}; "
                f"peak RSS parent {r['parent_rss_mb']:.0f} MB, largest worker {worker}"
            )
        same = all(
            (tmp / "out1" / s / f.name).read_bytes() == f.read_bytes()
            for s in ("train", "val")
            for f in (tmp / "out2" / s).glob("*.parquet")
        )
        print(
            f"speed-up 2 vs 1 process: {results[1]['wall'] / results[2]['wall']:.2f}x; "
            f"outputs byte-identical: {same}"
        )


if __name__ == "__main__":
    main()
