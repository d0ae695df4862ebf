import numpy as np

from kiln.components.common.config import DedupConfig
from kiln.components.ingest.dedup import Deduper, MinHasher, exact_key


def check_all(texts, **cfg):
    c = DedupConfig(**cfg)
    mh, d = MinHasher(c), Deduper(c)
    out = []
    for t in texts:
        sig = mh.signature(t)
        out.append(d.check(exact_key(t), sig, mh.band_keys(sig)))
    return out


def test_exact_near_and_distinct(make_prose):
    base = [make_prose(i, lines=12) for i in range(40)]
    near = []
    for i in range(0, 40, 4):  # change ~3 words of a ~190-word doc: Jaccard ≈ 0.9
        words = base[i].split()
        for j in (20, 90, 160):
            words[j] = "CHANGED"
        near.append(" ".join(words))
    result = check_all(base + [base[3], base[7]] + near)
    assert result[:40] == [None] * 40  # distinct documents are all kept
    assert result[40:42] == ["exact", "exact"]
    assert result[42:] == ["near"] * len(near)


def test_threshold_controls_near(make_prose):
    a = make_prose(1, lines=12)
    words = a.split()
    for j in range(0, len(words), 6):  # change every 6th word: Jaccard of 5-shingles ≈ 0.1
        words[j] = "zzz"
    b = " ".join(words)
    assert check_all([a, b]) == [None, None]
    assert check_all([a, b], near=False, exact=False) == [None, None]


def test_signature_estimates_jaccard(make_prose):
    mh = MinHasher(DedupConfig(bands=32, rows=8))
    a = make_prose(5, lines=20).split()
    b = list(a)
    b[150:] = ["other"] * (len(a) - 150)

    def shingles(w):
        return {tuple(w[i : i + 5]) for i in range(len(w) - 4)}

    sa, sb = shingles([w.lower() for w in a]), shingles([w.lower() for w in b])
    true = len(sa & sb) / len(sa | sb)
    est = float(np.mean(mh.signature(" ".join(a)) == mh.signature(" ".join(b))))
    assert abs(est - true) < 0.12, (est, true)
