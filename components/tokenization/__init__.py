"""Tokenization stage: BPE tokenizer, parallel encoding, token shards and their manifest.

`run_tokenize` is imported lazily so that the pretrain loader can import `shards`/`manifest`
without pulling in tokenizers or pyarrow.
"""


def __getattr__(name: str):
    if name == "run_tokenize":
        from kiln.components.tokenization.pipeline import run_tokenize

        return run_tokenize
    raise AttributeError(name)


__all__ = ["run_tokenize"]
