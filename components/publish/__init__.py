"""Publish stage: verified upload to S3, MLflow tracking and registry, KServe manifest.

    from kiln.components.publish import publish
    out = publish(model_dir, eval_json, "s3://bucket/kiln/models/run-1", cfg, run_id=...)

Modules: `run` (`publish`, the order of steps), `lineage` (digests, code version, checkpoints
index, loss curve), `track` (MLflow run and registry), `serving` and `inference_service`
(KServe InferenceService).
"""


def __getattr__(name: str):
    # Lazy, so `from kiln.components.publish.inference_service import …` stays light (no torch).
    if name == "publish":
        from kiln.components.publish.run import publish

        return publish
    raise AttributeError(name)


__all__ = ["publish"]
