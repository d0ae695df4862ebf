"""Language identification with py3langid (its model ships inside the package: works offline)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect(text: str, sample_chars: int = 2000) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of the text's language, from its first `sample_chars`."""
    lang, prob = _identifier().classify(text[:sample_chars])
    return str(lang), float(prob)
