"""KFP component: the ingest stage (raw text → cleaned, deduplicated train/val parquet)."""
# No `from __future__ import annotations`: KFP reads the real type annotations.

from kfp import dsl
from kfp.dsl import Dataset, Output

from kiln.components.common.images import image_ref


@dsl.component(base_image=image_ref("cpu"), install_kfp_package=False)
def ingest(corpus_uri: str, config_json: str, dataset: Output[Dataset]):
    """Clean, filter, deduplicate and split a raw text corpus.

    Args:
        corpus_uri: comma-separated inputs: s3://bucket/prefix, hf://org/name, files or globs
            visible to the step (jsonl/json/parquet/txt/md, optionally .gz/.zst).
        config_json: the resolved Kiln config (the `prepare` step's output); uses `ingest.*`.
        dataset: train/ and val/ parquet shards of {id, text, source}, stats.json, rejects.jsonl.
    """
    from kiln.components.ingest.step import ingest_step

    ingest_step(corpus_uri, dataset.path, config_json)
