"""Ingest stage: raw text → cleaned, filtered, deduplicated train/val parquet with exact stats.

`run_ingest` and `Stats` are imported lazily (the submodules pull in pyarrow and numpy).
"""


def __getattr__(name: str):
    if name == "run_ingest":
        from kiln.components.ingest.pipeline import run_ingest

        return run_ingest
    if name == "Stats":
        from kiln.components.ingest.stats import Stats

        return Stats
    raise AttributeError(name)


__all__ = ["Stats", "run_ingest"]
