"""Fixtures for ingest tests: prose that passes every quality filter, made on the fly."""

import random

import pytest

VOCAB = (
    "the of and to in that have with be is was for on it as by at from this an are or which "
    "river mountain science language history market garden music engine window village "
    "teacher morning winter summer bridge letter family country harbor forest station "
    "question answer number story reason season animal kitchen doctor student painter "
    "quietly slowly carefully brightly suddenly often always never"
).split()


def prose(seed: int, lines: int = 8) -> str:
    """A few sentences of English-looking prose (≥ 80 words, no repeated n-grams to speak of)."""
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        words = [rng.choice(VOCAB) for _ in range(rng.randint(12, 20))]
        out.append(" ".join(words).capitalize() + ".")
    return "\n".join(out)


@pytest.fixture
def make_prose():
    return prose
