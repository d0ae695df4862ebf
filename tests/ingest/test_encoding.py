"""Text encodings: UTF-16/UTF-32 are decoded by their BOM; what is not text is refused."""

import codecs
import gzip
import json

import pytest

from kiln.components.ingest.document import Document, Problem, ReadError
from kiln.components.ingest.encoding import sniff
from kiln.components.ingest.readers import Reader
from kiln.components.ingest.streams import iter_lines


def read(path, on_bad_utf8="replace"):
    reader = Reader("src", "text", "id", 1 << 20, 1 << 24, on_bad_utf8)
    return reader, list(reader.read(str(path)))


TEXT = "Grüße aus Köln — 日本語, emoji 🚀, and plain ASCII.\nSecond line."


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-be"])
def test_utf16_and_utf32_with_a_bom_are_decoded(tmp_path, codec):
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}
    bom["utf-32-be"] = codecs.BOM_UTF32_BE
    data = bom.get(codec, b"") + TEXT.encode(codec)  # "utf-16"/"utf-32" write their own BOM
    (tmp_path / "a.txt").write_bytes(data)
    reader, items = read(tmp_path / "a.txt")
    assert [d.text for d in items] == [TEXT] and reader.encoding.startswith(codec[:6])
    records = "".join(json.dumps({"id": f"r{i}", "text": TEXT}) + "\n" for i in range(3))
    (tmp_path / "b.jsonl.gz").write_bytes(
        gzip.compress(bom.get(codec, b"") + records.encode(codec))
    )
    _, items = read(tmp_path / "b.jsonl.gz")
    assert [d.text for d in items] == [TEXT] * 3 and [d.line for d in items] == [1, 2, 3]


def test_invalid_utf16_is_replaced_and_counted_or_skipped(tmp_path):
    data = (
        codecs.BOM_UTF16_LE
        + "ok ".encode("utf-16-le")
        + b"\x00\xd8"
        + "tail".encode("utf-16-le")
        + b"!"
    )
    (tmp_path / "bad.txt").write_bytes(data)  # a lone high surrogate, then an odd trailing byte
    reader, items = read(tmp_path / "bad.txt")
    assert items[0].text == "ok \ufffdtail\ufffd" and reader.text.replaced == 2
    _, items = read(tmp_path / "bad.txt", on_bad_utf8="skip")
    assert isinstance(items[0], Problem) and items[0].kind == "bad_encoding"


def test_utf16_without_bom_and_binary_are_refused_with_a_reason(tmp_path):
    (tmp_path / "a.txt").write_bytes(TEXT.replace("—", "-").encode("utf-16-le"))
    _, items = read(tmp_path / "a.txt")
    assert len(items) == 1 and items[0].kind == "utf16_without_bom"
    assert "UTF-16-LE without a byte-order mark" in items[0].detail
    (tmp_path / "b.jsonl").write_bytes("plain ascii words here".encode("utf-16-be"))
    assert read(tmp_path / "b.jsonl")[1][0].kind == "utf16_without_bom"
    (tmp_path / "c.txt").write_bytes(bytes(range(256)) * 16)
    _, items = read(tmp_path / "c.txt")
    assert items[0].kind == "binary" and "not text" in items[0].detail


def test_sniff_keeps_text_with_a_few_bad_bytes():
    assert sniff(b"")[0] == "utf-8"
    assert sniff("Café crème, déjà vu. ".encode("latin-1") * 10)[0] == "utf-8"  # counted later
    assert sniff(b"one NUL\x00 in a long text. " + b"Plain words follow. " * 20)[0] == "utf-8"
    with pytest.raises(ReadError, match="binary"):
        sniff(b"\x00\x00\x01\x02" * 64)


def test_latin1_is_kept_with_replacement_and_counted(tmp_path):
    (tmp_path / "a.txt").write_bytes("Café".encode("latin-1"))
    reader, items = read(tmp_path / "a.txt")
    assert isinstance(items[0], Document) and items[0].text == "Caf\ufffd"
    assert reader.repaired_utf8 == 1


def test_lines_end_at_lf_crlf_and_a_lone_cr():
    chunks = [b"a\r\nb\rc\n", b"d\r", b"\ne\r", b"f"]
    assert list(iter_lines(iter(chunks), 100)) == [
        (1, b"a"),
        (2, b"b"),
        (3, b"c"),
        (4, b"d"),
        (5, b"e"),
        (6, b"f"),
    ]


def test_utf16_across_many_chunks_splits_no_character(tmp_path):
    # Odd-length records push code units and surrogate pairs across the 1 MiB chunk borders.
    texts = [f"{i} 🚀 naïve {'x' * (i % 7)} " * 50 for i in range(3000)]
    records = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)
    (tmp_path / "big.jsonl").write_bytes(records.encode("utf-16"))
    assert (tmp_path / "big.jsonl").stat().st_size > 3 << 20
    reader, items = read(tmp_path / "big.jsonl")
    assert [d.text for d in items] == texts and reader.text.replaced == 0
