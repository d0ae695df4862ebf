"""Build Benchmark 2's two other texts from local copies of public-domain sources.

Nothing is downloaded: point it at files you already have.

- English prose: a Project Gutenberg plain-text book (Benchmark 2 uses Pride and Prejudice,
  EBook #1342); the licence header and footer are cut at the `*** START OF` / `*** END OF`
  markers, so only the book's own text is scored.
- Non-Latin script: Tang poems from a checkout of github.com/chinese-poetry/chinese-poetry
  (public-domain classical poetry, traditional characters, three UTF-8 bytes each); the
  `全唐诗/poet.tang.N.json` files in numeric order, each poem as its title line then its lines,
  a blank line between poems, up to `--max-bytes` (default 1.1 MB, tinyshakespeare's size).

    python benchmarks/corpora.py gutenberg pg1342.txt -o pride.txt
    python benchmarks/corpora.py tang path/to/chinese-poetry -o tang.txt
    python benchmarks/bench_learning_efficiency.py --nanogpt ../nanoGPT --text tang.txt
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path


def gutenberg(path: Path) -> str:
    """The book's text between Project Gutenberg's START and END markers."""
    text = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    start = re.search(r"^\*\*\* ?START OF.*$", text, re.M)
    end = re.search(r"^\*\*\* ?END OF.*$", text, re.M)
    if not start or not end or end.start() < start.end():
        raise ValueError(f"{path}: no '*** START OF' / '*** END OF' markers: not a Gutenberg text")
    return text[start.end() : end.start()].strip() + "\n"


def tang(checkout: Path, max_bytes: int) -> str:
    """Tang poems, title then lines, until `max_bytes` of UTF-8."""
    folder = checkout / "全唐诗"
    files = sorted(folder.glob("poet.tang.*.json"), key=lambda p: int(p.stem.rsplit(".", 1)[1]))
    if not files:
        raise ValueError(f"{folder}: no poet.tang.*.json files: not a chinese-poetry checkout")
    out: list[str] = []
    size = 0
    for f in files:
        for poem in json.loads(f.read_text(encoding="utf-8")):
            block = "\n".join([poem.get("title", ""), *poem.get("paragraphs", [])]) + "\n\n"
            n = len(block.encode())
            if size + n > max_bytes:
                return "".join(out)
            out.append(block)
            size += n
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("kind", choices=["gutenberg", "tang"], help="which source SOURCE is")
    ap.add_argument("source", type=Path, help="a Gutenberg .txt file, or a chinese-poetry checkout")
    ap.add_argument("-o", "--out", type=Path, required=True, help="where to write the UTF-8 text")
    ap.add_argument("--max-bytes", type=int, default=1_100_000, help="tang: size cap (bytes)")
    args = ap.parse_args(argv)
    if not args.source.exists():
        print(f"error: {args.source} does not exist", file=sys.stderr)
        return 2
    try:
        text = (
            gutenberg(args.source)
            if args.kind == "gutenberg"
            else tang(args.source, args.max_bytes)
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.write_text(text, encoding="utf-8")
    print(f"{args.out}: {len(text.encode()):,} bytes, {len(text):,} characters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
