"""Fine-tuning with the pretraining loop: same checkpoints, exact resume, Ray Train workers, FSDP2.

`pretrain.train.make_trainer` picks `SFTTrainer` for a chat tokens directory (see `sft.data`).
It differs from pretraining in what it starts from and what it learns:

- the model is the base's architecture (from the chat tokens manifest, vocabulary resized for
  the chat markers), initialized from the base weights stored there, not from the seed;
- batches are packed conversations; only assistant tokens (and their `<|end|>`) are targets.
  A step's loss is the sum over its trained tokens divided by their number across all
  micro-batches and ranks, so every assistant token weighs the same however the packing fell;
- `sft.epochs` (when > 0) sets the number of steps from the packed training rows;
- validation covers every held-out conversation once; samples answer the fixed prompts
  through the chat template and stop at `<|end|>`.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from kiln.components.common.config import ModelConfig
from kiln.components.pretrain.data import IGNORE
from kiln.components.pretrain.train import Trainer
from kiln.components.sft.data import ChatLoader, ChatSplit, read_manifest
from kiln.components.sft.prepare import base_state
from kiln.components.sft.template import ChatIds, render_prompt


class SFTTrainer(Trainer):
    """`Trainer` on rendered conversations, starting from the base model; see the module doc."""

    def build_model_cfg(self) -> ModelConfig:
        self.manifest = read_manifest(self.tokens_dir)
        model_cfg = ModelConfig(**self.manifest["base"]["model"])
        if self.cfg.data.seq_len > model_cfg.max_seq_len:
            raise ValueError(
                f"data.seq_len={self.cfg.data.seq_len} is longer than the base model's context "
                f"({model_cfg.max_seq_len} tokens): set --set data.seq_len={model_cfg.max_seq_len}"
            )
        return model_cfg

    def load_initial_weights(self) -> None:
        self.model.load_state_dict(base_state(self.tokens_dir, self.model_cfg.tie_embeddings))

    def open_data(self) -> None:
        d, t = self.cfg.data, self.cfg.train
        self.eot_id = int(self.manifest["eot_id"])
        self.chat = ChatIds(**self.manifest["chat_ids"])
        self.loader = ChatLoader(
            ChatSplit.load(self.tokens_dir, "train"),
            d.seq_len,
            t.micro_batch_size,
            self.rank,
            self.world,
            d.seed,
            d.shuffle,
            pad_id=self.eot_id,
        )
        self.val_split = ChatSplit.load(self.tokens_dir, "val")
        self.has_val = len(self.val_split) > 0
        self.val_loader: ChatLoader | None = None

    def total_steps(self) -> int:
        epochs = self.cfg.sft.epochs
        if not epochs:
            return self.cfg.train.max_steps
        rows_per_step = self.cfg.train.micro_batch_size * self.world * self.accum
        return max(1, math.ceil(epochs * len(self.loader.rows(0)) / rows_per_step))

    def val_batches(self):
        if self.val_loader is None:  # packed once: the same rows at every validation
            d, t = self.cfg.data, self.cfg.train
            self.val_loader = ChatLoader(
                self.val_split,
                d.seq_len,
                t.micro_batch_size,
                self.rank,
                self.world,
                shuffle=False,
                pad_id=self.eot_id,
            )
        yield from self.val_loader.epoch_batches()

    def target_count(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        count = torch.tensor(
            sum(int((y != IGNORE).sum()) for _, y in batches),
            dtype=torch.float64,
            device=self.device,
        )
        if self.world > 1:
            dist.all_reduce(count)
        # DDP averages gradients over ranks, so each rank divides by the global count / world.
        return max(float(count), 1.0) / self.world

    def prompt_ids(self, tokenizer, prompt: str) -> tuple[list[int], int | None]:
        messages = [{"role": "user", "content": prompt}]
        if self.cfg.sft.system_prompt:
            messages.insert(0, {"role": "system", "content": self.cfg.sft.system_prompt})
        return render_prompt(tokenizer, messages, self.chat), self.chat.end
