"""Evaluate stage: held-out loss, perplexity and bits per byte, seeded samples, a gate verdict.

    from kiln.components.evaluate import evaluate
    report = evaluate(model_dir, tokens_dir, output_dir, cfg.eval)   # also writes eval.json

Modules: `metrics` (the held-out pass and the bits-per-byte formula), `samples`, `gate`,
`run` (`evaluate`, `read_eval`). The exports are imported lazily, so importing the package (the
KFP component, at pipeline compile time) does not import torch.
"""


def __getattr__(name: str):
    if name in ("EVAL_JSON", "evaluate", "read_eval"):
        from kiln.components.evaluate import run

        return getattr(run, name)
    raise AttributeError(name)


__all__ = ["EVAL_JSON", "evaluate", "read_eval"]
