"""KFP component: the tokenize stage (dataset → BPE tokenizer + verified token shards)."""
# No `from __future__ import annotations`: KFP reads the real type annotations.

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from kiln.components.common.images import image_ref


@dsl.component(base_image=image_ref("cpu"), install_kfp_package=False)
def tokenize(dataset: Input[Dataset], config_json: str, tokens: Output[Dataset]):
    """Train a byte-level BPE on the train split and encode both splits into token shards.

    Args:
        dataset: the ingest step's dataset (train/ and val/ parquet).
        config_json: the resolved Kiln config; uses `tokenizer.*`.
        tokens: tokenizer.json, train/ and val/ shards and manifest.json (sha256 per shard).
    """
    from kiln.components.tokenization.step import tokenize_step

    tokenize_step(dataset.path, tokens.path, config_json)
