"""KFP component: the pretrain stage (token shards → checkpoints + Hugging Face model)."""
# No `from __future__ import annotations`: KFP reads the real type annotations.

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from kiln.components.common.images import image_ref


@dsl.component(base_image=image_ref("gpu"), install_kfp_package=False)
def pretrain(tokens: Input[Dataset], config_json: str, run_id: str, trained: Output[Model]):
    """Pretrain the LLaMA-style model; here, on local Ray, or as a job on a Ray cluster.

    Args:
        tokens: the tokenize step's token shards and tokenizer.
        config_json: the resolved Kiln config; `dist.*` says where training runs
            (ray_address http://HEAD:8265 submits a Ray job, workers > 0 uses Ray Train).
        run_id: the pipeline's MLflow run (step-wise losses, loss curve, config).
        trained: config.json, train_log.jsonl, checkpoints/step_N and the final model in
            Hugging Face Llama format under model/.
    """
    from kiln.components.pretrain.step import pretrain_step

    pretrain_step(tokens.path, trained.path, config_json, run_id)
