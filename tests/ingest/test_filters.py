import pytest

from kiln.components.common.config import FilterConfig
from kiln.components.ingest import filters
from kiln.components.ingest.normalize import normalize, redact_pii


def reason(text, **overrides):
    cfg = FilterConfig(**overrides)
    return filters.apply(filters.build(cfg), text)


def test_good_prose_is_kept(make_prose):
    assert reason(make_prose(1)) is None


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: "tiny", "too_short"),
        (lambda p: "word " * 30, "gopher_few_words"),
        (lambda p: " ".join(["ab"] * 80) + " the and", "gopher_mean_word_length"),
        (lambda p: " ".join(["extraordinarily"] * 80) + " the and", "gopher_mean_word_length"),
        (lambda p: p + " #tag" * 40, "gopher_symbol_ratio"),
        (lambda p: "\n".join(f"- {ln}" for ln in p.split("\n")), "gopher_bullet_lines"),
        (lambda p: "\n".join(f"{ln}..." for ln in p.split("\n")), "gopher_ellipsis_lines"),
        (lambda p: p + " 12345 67890" * 30, "gopher_alpha_words"),
        (lambda p: p.replace("the ", "xx ").replace(" the", " xx"), None),
        (lambda p: p + "\nLorem ipsum dolor sit amet.", "c4_lorem_ipsum"),
        (lambda p: p + "\nfunction f() { return 1 }", "c4_curly_bracket"),
        (lambda p: (p.split("\n")[0] + " the and\n") * 8, "gopher_dup_lines"),
        (
            lambda p: (
                p + "".join(f"\nnote {chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(40))
            ),
            "fineweb_short_lines",
        ),
    ],
)
def test_each_filter_drops_with_its_reason(make_prose, make, expected):
    assert reason(make(make_prose(2))) == expected


def test_stop_words_and_ngram_repetition(make_prose):
    no_stop = " ".join(w for w in make_prose(3).split() if w.lower() not in filters.STOP_WORDS)
    assert reason(no_stop, min_words=10) == "gopher_stop_words"
    looped = "the river and the bridge of music " * 20
    assert reason(looped).startswith("gopher_")
    assert reason(looped, disable=list(filters.REGISTRY)) is None


def test_ellipsis_lines_and_disable(make_prose):
    text = "\n".join(f"{ln}…" for ln in make_prose(4).split("\n"))
    assert reason(text, max_symbol_word_ratio=1.0) == "gopher_ellipsis_lines"
    assert reason(text, disable=["gopher_quality"]) is None
    with pytest.raises(ValueError, match="unknown filter"):
        filters.build(FilterConfig(disable=["nope"]))


def test_normalize_and_pii():
    text, removed = normalize("\ufeffa\r\nb\x00c\x07\re\u0301\t \n")
    assert text == "a\nbc\né" and removed == 3
    counts: dict = {}
    out = redact_pii(
        "Mail jane.doe@example.org, call +1 415-555-0100 or (020) 7946 0958, "
        "server 10.0.0.254 and fe80:0:0:0:202:b3ff:fe1e:8329; year 2024, id 123456789.",
        counts,
    )
    assert counts == {"email": 1, "phone": 2, "ip": 2}
    assert "2024" in out and "123456789" in out and "<EMAIL>" in out and "example" not in out
