"""Pretrain stage: a LLaMA-style decoder trained in one process or under Ray Train.

    from kiln.components.pretrain import pretrain
    result = pretrain(cfg, "data/tokens", "runs/r1")          # in this process, no Ray

    from kiln.components.pretrain.ray_launch import launch
    result = launch(cfg, "data/tokens", "runs/r1")            # cfg.dist.workers Ray Train workers

Modules: `model` (the network only), `train` (the loop), `optim`, `data`, `checkpoint`,
`runtime`, `train_log` (the per-step record), `ray_launch`, `export` (Hugging Face format),
`throughput`. The export is imported lazily, so importing the package (the KFP component, at
pipeline compile time) does not import torch.
"""


def __getattr__(name: str):
    if name == "pretrain":
        from kiln.components.pretrain.train import pretrain

        return pretrain
    raise AttributeError(name)


__all__ = ["pretrain"]
