"""Text encodings: UTF-8 by default, UTF-16/UTF-32 by their byte-order mark, the rest refused.

`TextStream` looks at the first bytes of a text file (after decompression) and then

- passes UTF-8 through (invalid bytes are handled per record by `Reader.decode`);
- transcodes UTF-16/UTF-32 that start with a BOM to UTF-8, so line splitting and JSON work as
  for any UTF-8 file (the BOM is dropped; invalid code units become U+FFFD, counted, or stop
  the file with `bad_encoding` under `ingest.on_bad_utf8=skip`);
- refuses, with a reason, what would otherwise be kept as garbage: UTF-16 without a BOM
  (`utf16_without_bom`: NUL bytes in every other position) and binary data (`binary`: NUL
  bytes, or mostly invalid UTF-8, as in images, archives or legacy 8-bit encodings).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator

from kiln.components.ingest.document import ReadError

SNIFF_BYTES = 1 << 16  # how much of a file's start decides its encoding
MAX_NUL_FRACTION = 0.01  # text has (almost) no NUL bytes; a few are removed by normalize
MAX_INVALID_FRACTION = 0.3  # latin-1 prose has a few % invalid bytes; binary data most
# Longest BOM first: UTF-32-LE's BOM starts with UTF-16-LE's.
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le", codecs.utf_32_le_decode),
    (codecs.BOM_UTF32_BE, "utf-32-be", codecs.utf_32_be_decode),
    (codecs.BOM_UTF16_LE, "utf-16-le", codecs.utf_16_le_decode),
    (codecs.BOM_UTF16_BE, "utf-16-be", codecs.utf_16_be_decode),
)
Decoder = Callable[[bytes, str, bool], tuple[str, int]]


def _utf16_without_bom(sample: bytes) -> str:
    """'LE'/'BE' when NUL bytes fill the odd/even positions (ASCII-range UTF-16), else ''."""
    half = len(sample) // 2
    if half < 8:
        return ""
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    if odd >= 0.3 * half and even <= 0.05 * half:
        return "LE"
    if even >= 0.3 * half and odd <= 0.05 * half:
        return "BE"
    return ""


def sniff(head: bytes) -> tuple[str, Decoder | None, int]:
    """(encoding, decoder or None for UTF-8, BOM length) of a stream starting with `head`.

    Raises:
        ReadError: `utf16_without_bom` or `binary`, with what was seen.
    """
    for bom, name, decoder in BOMS:
        if head.startswith(bom):
            return name, decoder, len(bom)
    sample = head[:SNIFF_BYTES]
    if not sample or sample.isascii() and b"\0" not in sample:
        return "utf-8", None, 0
    order = _utf16_without_bom(sample)
    if order:
        raise ReadError(
            "utf16_without_bom",
            f"looks like UTF-16-{order} without a byte-order mark (NUL bytes in every other "
            f"position of the first {len(sample)} bytes): re-encode it as UTF-8, or add a BOM",
        )
    nuls = sample.count(0) / len(sample)
    invalid = 1 - len(sample.decode("utf-8", "ignore").encode("utf-8")) / len(sample)
    if nuls > MAX_NUL_FRACTION or invalid > MAX_INVALID_FRACTION:
        raise ReadError(
            "binary",
            f"not text: {nuls:.0%} NUL bytes and {invalid:.0%} invalid UTF-8 in the first "
            f"{len(sample)} bytes (a binary file, or a legacy 8-bit encoding: re-encode as UTF-8)",
        )
    return "utf-8", None, 0


class TextStream:
    """UTF-8 chunks of a text file's decompressed chunks; `encoding` and `replaced` after use."""

    def __init__(self, replace: bool):
        self.replace = replace
        self.encoding = "utf-8"
        self.replaced = 0  # U+FFFD substitutions made while transcoding

    def __call__(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        head, damage = b"", None
        try:
            for chunk in chunks:  # gather enough of the start to judge it
                head += chunk
                if len(head) >= SNIFF_BYTES:
                    break
        except ReadError as e:  # a short damaged file: deliver what came before the damage
            damage = e
        self.encoding, decoder, bom = sniff(head)
        if decoder is None:
            if head:
                yield head
            if damage is not None:
                raise damage
            yield from chunks
            return
        pending = head[bom:]
        if damage is None:
            for chunk in chunks:
                text, pending = self._decode(decoder, pending + chunk, final=False)
                yield text.encode("utf-8")
        text, _ = self._decode(decoder, pending, final=damage is None)
        yield text.encode("utf-8")
        if damage is not None:
            raise damage

    def _decode(self, decoder: Decoder, data: bytes, final: bool) -> tuple[str, bytes]:
        """Decoded text and the undecoded tail (an incomplete code unit, unless `final`)."""
        parts = []
        while True:
            try:
                text, used = decoder(data, "strict", final)
            except UnicodeDecodeError as e:
                if not self.replace:
                    raise ReadError("bad_encoding", f"invalid {self.encoding} ({e.reason})") from e
                parts.append(decoder(data[: e.start], "strict", True)[0] + "\ufffd")
                self.replaced += 1
                data = data[e.end :]
                continue
            parts.append(text)
            return "".join(parts), data[used:]
