"""The built-in corpus: real English text that exists on every machine with Python, no download.

`kiln run` trains on it when no `--data` is given, and checks a `--data` it is given before
any step starts:

    path = write_builtin_corpus("kiln-work/corpus")   # → kiln-work/corpus/python-docs.jsonl
    check_data("corpus/*.jsonl,web=crawl/")           # FileNotFoundError when one matches nothing

Two sources from the running interpreter's own standard library:

- `pydoc_data.topics`: the language reference and tutorial sections `help()` shows (~0.5 MB), one
  document per paragraph group, so the train/val split has enough documents to draw from;
- module, class and function docstrings of the pure-Python standard library, read with `ast`
  (nothing is imported, so no module runs any code).

The text is what this Python version ships, so the corpus differs a little between Python
versions but is identical for every run on one machine (files are visited in sorted order).
"""

from __future__ import annotations

import ast
import json
import sysconfig
from collections.abc import Iterator
from pathlib import Path

CORPUS_NAME = "python-docs.jsonl"
# Group consecutive paragraphs of a help topic into documents of about this many characters.
_DOC_CHARS = 2000
_MIN_DOCSTRING_CHARS = 400
_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "turtledemo", "__pycache__"}


def _chunks(text: str, size: int = _DOC_CHARS) -> Iterator[str]:
    """Split `text` at blank lines into pieces of about `size` characters."""
    piece: list[str] = []
    length = 0
    for para in text.split("\n\n"):
        piece.append(para)
        length += len(para) + 2
        if length >= size:
            yield "\n\n".join(piece).strip()
            piece, length = [], 0
    if piece and "\n\n".join(piece).strip():
        yield "\n\n".join(piece).strip()


def help_topics() -> Iterator[tuple[str, str]]:
    """(id, text) for every chunk of the `help()` topics in `pydoc_data.topics`."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        for i, chunk in enumerate(_chunks(topics[name])):
            yield f"topic/{name}/{i}", chunk


def stdlib_docstrings(limit_files: int | None = None) -> Iterator[tuple[str, str]]:
    """(id, text) for the longer module/class/function docstrings of the pure-Python stdlib."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p for p in root.rglob("*.py") if not _SKIP_DIRS & set(p.relative_to(root).parts[:-1])
    )
    for path in files[:limit_files]:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue  # a few stdlib files are deliberately invalid or not UTF-8
        rel = path.relative_to(root).as_posix()
        nodes = [tree] + [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        for node in nodes:
            doc = ast.get_docstring(node)
            if doc and len(doc) >= _MIN_DOCSTRING_CHARS:
                where = f"{getattr(node, 'lineno', 0)}:{getattr(node, 'name', '')}"
                yield f"stdlib/{rel}:{where}", doc


def write_builtin_corpus(directory: str | Path, max_bytes: int = 4 << 20) -> Path:
    """Write the built-in corpus as JSONL (`{id, text, source}` per line) and return its path.

    Args:
        directory: where `python-docs.jsonl` is written (created if missing).
        max_bytes: stop adding stdlib docstrings once the text reaches this many bytes
            (the help topics are always included in full).

    Returns:
        The path of the JSONL file (rewritten only when its content would change).
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    lines, total = [], 0
    for source, docs in (("python-help", help_topics()), ("python-stdlib", stdlib_docstrings())):
        for doc_id, text in docs:
            if source == "python-stdlib" and total >= max_bytes:
                break
            lines.append(json.dumps({"id": doc_id, "text": text, "source": source}))
            total += len(text.encode())
    path = out / CORPUS_NAME
    content = "\n".join(lines) + "\n"
    if not path.exists() or path.read_text(encoding="utf-8") != content:
        path.write_text(content, encoding="utf-8")
    return path


CONVERSATIONS_NAME = "python-qa.jsonl"
_QUESTIONS = (
    "What does `{name}` do?",
    "Explain `{name}` in one sentence.",
    "In the Python standard library, what is `{name}` for?",
)


def builtin_conversations(limit: int | None = None) -> Iterator[dict]:
    """Question/answer conversations made from the standard library's own docstrings: the user
    asks what `module.name` does (one of a few phrasings), the assistant answers with the first
    paragraph of its docstring. Deterministic for one Python version; no download."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p for p in root.rglob("*.py") if not _SKIP_DIRS & set(p.relative_to(root).parts[:-1])
    )
    count = 0
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        for node in tree.body:  # public top-level functions and classes
            if not isinstance(node, ast.ClassDef | ast.FunctionDef) or node.name.startswith("_"):
                continue
            doc = ast.get_docstring(node) or ""
            answer = " ".join(doc.split("\n\n")[0].split())
            if not 20 <= len(answer) <= 300:
                continue
            name = f"{module}.{node.name}"
            question = _QUESTIONS[sum(map(ord, name)) % len(_QUESTIONS)].format(name=name)
            yield {
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            }
            count += 1
            if limit is not None and count >= limit:
                return


def write_builtin_conversations(directory: str | Path, limit: int | None = None) -> Path:
    """Write `builtin_conversations()` as JSONL (`{"messages": [...]}` per line); its path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / CONVERSATIONS_NAME
    content = "".join(
        json.dumps(c, ensure_ascii=False) + "\n" for c in builtin_conversations(limit)
    )
    if not path.exists() or path.read_text(encoding="utf-8") != content:
        path.write_text(content, encoding="utf-8")
    return path


def check_data(data: str) -> None:
    """Check `kiln run --data` up front: every local input (file, directory, glob, optionally
    `NAME=` prefixed) must name at least one readable file, the way the ingest step expands it.
    s3:// and hf:// inputs are left to the ingest step, which has their credentials.

    Raises:
        ValueError: `data` names no input at all.
        FileNotFoundError: a local input matches no input file (the message names it).
    """
    from kiln.components.ingest import readers

    inputs = [part.strip() for part in data.split(",") if part.strip()]
    if not inputs:
        raise ValueError(f"--data {data!r} names no input: give files, globs, s3:// or hf://")
    for arg in inputs:
        _, target = readers.split_source(arg)
        if target.startswith(("s3://", "hf://")) or readers.expand(target):
            continue
        pattern = any(c in target for c in "*?[")
        missing = "matches no file" if pattern else "does not exist"
        if not pattern and Path(target).exists():
            missing = "holds no input file"
        raise FileNotFoundError(
            f"--data {arg} {missing} (expected files, directories or globs of .txt .md .jsonl "
            ".json .parquet, optionally .gz/.zst; or s3://bucket/prefix, hf://org/name)"
        )
