"""Ingest stage: raw text → cleaned, filtered, deduplicated train/val parquet with exact stats.

    from kiln.components.ingest import ingest
    stats = ingest(["data/raw"], "data/clean", cfg.ingest)

`ingest` and `Stats` are imported lazily (the submodules pull in pyarrow and numpy).
"""


def __getattr__(name: str):
    if name == "ingest":
        from kiln.components.ingest.pipeline import ingest

        return ingest
    if name == "Stats":
        from kiln.components.ingest.stats import Stats

        return Stats
    raise AttributeError(name)


__all__ = ["Stats", "ingest"]
