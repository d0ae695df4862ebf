"""Tokenization stage: BPE tokenizer, parallel encoding, token shards and their manifest.

    from kiln.components.tokenization import tokenize
    manifest = tokenize("data/clean", "data/tokens", cfg.tokenizer)

`tokenize` is imported lazily so that the pretrain loader can import `shards`/`manifest`
without pulling in tokenizers or pyarrow.
"""


def __getattr__(name: str):
    if name == "tokenize":
        from kiln.components.tokenization.pipeline import tokenize

        return tokenize
    raise AttributeError(name)


__all__ = ["tokenize"]
