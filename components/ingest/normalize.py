"""Text normalization and PII redaction.

`normalize`: Unicode NFC, CRLF/CR → LF, BOM (U+FEFF) and control characters removed except
newline and tab (NUL included), trailing whitespace of the document stripped.
`redact_pii`: e-mail addresses, phone numbers and IPv4/IPv6 addresses are replaced by
`<EMAIL>`, `<PHONE>`, `<IP>` and counted per kind.
"""

from __future__ import annotations

import re
import unicodedata

# C0/C1 controls except \t and \n, plus the BOM / zero-width no-break space.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff]")
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_IPV4 = re.compile(
    r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b"
)
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![\w:])")
# International (+CC …) or North-American style numbers with separators; bare digit runs
# (years, counts, ids) are left alone.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}(?![\w])"
)
PII = (("email", _EMAIL, "<EMAIL>"), ("ip", _IPV4, "<IP>"), ("ip", _IPV6, "<IP>"))
PII += (("phone", _PHONE, "<PHONE>"),)


def normalize(text: str) -> tuple[str, int]:
    """Normalized text and the number of control characters removed."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text, removed = _CONTROL.subn("", text)
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    return text.rstrip(), removed


def redact_pii(text: str, counts: dict[str, int]) -> str:
    """Replace e-mails, IPs and phone numbers; add how many of each to `counts`."""
    for kind, pattern, token in PII:
        if kind == "email" and "@" not in text:
            continue
        text, n = pattern.subn(token, text)
        if n:
            counts[kind] = counts.get(kind, 0) + n
    return text
