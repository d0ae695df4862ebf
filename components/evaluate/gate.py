"""The evaluation gate: may this model be published as a champion candidate?

Every check produces one human-readable line; the verdict fails when any check fails:

    {"passed": false,
     "reasons": ["val_loss 5.1234 exceeds eval.max_val_loss 4.0000",
                 "bits_per_byte 1.9000 within eval.max_bits_per_byte 2.0000"]}

Checks: the metrics are finite; `eval.max_val_loss` and `eval.max_bits_per_byte` when set (> 0);
with a baseline, the val loss is at least `eval.baseline_margin` nats below the baseline's.
Who becomes `champion` is decided at publish time, after this gate passed, by one of two rules:
with a champion, the registry's gate (`ModelRegistry.promote_if_better`: a better val loss than
the champion's on the same validation set); with none yet, `unigram_rule` here (a val loss at
least `eval.unigram_margin` below the unigram baseline of the model's own tokenizer), so a model
that learned nothing from context never becomes the first champion.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from kiln.components.common.config import EvalConfig


def gate_verdict(
    metrics: dict[str, float], cfg: EvalConfig, baseline: dict[str, float] | None = None
) -> dict[str, Any]:
    """Judge `metrics` (val_loss, bits_per_byte) against `cfg`'s thresholds and a baseline.

    Args:
        metrics: the candidate's held-out metrics.
        cfg: the `eval` config section (thresholds; 0 switches a threshold off).
        baseline: the baseline model's metrics on the same tokens, when one was given.

    Returns:
        {"passed": bool, "reasons": [one line per check], "failed": [the failing lines]}.
    """
    reasons: list[str] = []
    failed: list[str] = []

    def check(ok: bool, line: str) -> None:
        reasons.append(line)
        if not ok:
            failed.append(line)

    loss, bpb = metrics["val_loss"], metrics["bits_per_byte"]
    finite = math.isfinite(loss) and math.isfinite(bpb)
    check(finite, f"metrics finite (val_loss {loss:.4f}, bits_per_byte {bpb:.4f})")
    if not finite:
        reasons[-1] = failed[-1] = f"non-finite metrics: val_loss {loss}, bits_per_byte {bpb}"
    if cfg.max_val_loss > 0:
        ok = loss <= cfg.max_val_loss
        word = "within" if ok else "exceeds"
        check(ok, f"val_loss {loss:.4f} {word} eval.max_val_loss {cfg.max_val_loss:.4f}")
    if cfg.max_bits_per_byte > 0:
        ok = bpb <= cfg.max_bits_per_byte
        word = "within" if ok else "exceeds"
        check(
            ok, f"bits_per_byte {bpb:.4f} {word} eval.max_bits_per_byte {cfg.max_bits_per_byte:.4f}"
        )
    if baseline is not None:
        base = baseline["val_loss"]
        gain = base - loss
        ok = gain >= cfg.baseline_margin
        verb = "beats" if ok else "does not beat"
        check(
            ok,
            f"val_loss {loss:.4f} {verb} baseline {base:.4f} by the margin "
            f"eval.baseline_margin {cfg.baseline_margin:.4f} (improvement {gain:+.4f})",
        )
    return {"passed": not failed, "reasons": reasons, "failed": failed}


class Rule(NamedTuple):
    """A champion rule's verdict and the sentence that explains it."""

    passed: bool
    reason: str


def unigram_rule(metrics: dict[str, float], margin: float) -> Rule:
    """May the first champion be this model? Only if its val loss is at least `margin` (a
    fraction) below `unigram_loss`, the unigram baseline of its tokenizer on the same tokens."""
    loss, base = metrics.get("val_loss"), metrics.get("unigram_loss")
    need = f"needs {100 * margin:g}% below, eval.unigram_margin"
    if base is None or loss is None:
        return Rule(
            False,
            "the eval report has no unigram baseline (an older `kiln evaluate` wrote it); "
            "evaluate again to let this version become the first champion",
        )
    if not (math.isfinite(loss) and base > 0):
        return Rule(False, f"val_loss {loss} is not comparable with the unigram baseline {base}")
    gain = (base - loss) / base
    where = f"{100 * gain:.1f}% below" if gain >= 0 else f"{100 * -gain:.1f}% above"
    line = f"val_loss {loss:.4f} is {where} the unigram baseline {base:.4f} of its tokenizer"
    return Rule(gain >= margin, f"{line} ({need})")
