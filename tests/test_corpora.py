"""benchmarks/corpora.py: Benchmark 2's other texts, rebuilt from local files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import corpora  # noqa: E402


def test_gutenberg_keeps_only_the_book(tmp_path):
    src = tmp_path / "pg.txt"
    src.write_text(
        "\ufeffThe Project Gutenberg EBook\r\nlicence\r\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK X ***\r\n\r\nChapter 1\r\nIt is a truth.\r\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK X ***\r\nmore licence\r\n",
        encoding="utf-8",
    )
    out = tmp_path / "out.txt"
    assert corpora.main(["gutenberg", str(src), "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == "Chapter 1\nIt is a truth.\n"


def test_tang_orders_files_numerically_and_caps_bytes(tmp_path):
    folder = tmp_path / "全唐诗"
    folder.mkdir()
    for n in (0, 1000, 200):  # numeric order: 0, 200, 1000
        poem = {"title": f"題{n}", "paragraphs": ["秦川雄帝宅，", "函谷壯皇居。"]}
        (folder / f"poet.tang.{n}.json").write_text(json.dumps([poem]), encoding="utf-8")
    (folder / "poet.song.0.json").write_text(json.dumps([{"title": "宋"}]), encoding="utf-8")
    text = corpora.tang(tmp_path, max_bytes=10_000)
    assert [b.split("\n")[0] for b in text.strip().split("\n\n")] == ["題0", "題200", "題1000"]
    one = len("題0\n秦川雄帝宅，\n函谷壯皇居。\n\n".encode())
    assert corpora.tang(tmp_path, max_bytes=2 * one + 5).count("\n\n") == 2


def test_bad_sources_are_one_line_errors(tmp_path, capsys):
    not_book = tmp_path / "notes.txt"
    not_book.write_text("just notes\n", encoding="utf-8")
    assert corpora.main(["gutenberg", str(not_book), "-o", str(tmp_path / "o")]) == 2
    assert corpora.main(["tang", str(tmp_path), "-o", str(tmp_path / "o")]) == 2
    assert corpora.main(["tang", str(tmp_path / "absent"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert not (tmp_path / "o").exists()
