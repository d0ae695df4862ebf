"""Supervised fine-tuning: a base model and conversations in, a chat model out.

Modules, left to right: `conversation_records` and `conversations` (read, validate, account,
dedup, split), `template` (chat markers and the Jinja chat template), `prepare` (resolve the
base, render the conversations), `data` (rendered conversations on disk, packed batches with an
assistant-only loss mask), `train` (the pretraining loop on them), `finetune` (the whole
fine-tuning), `evaluate` (against the base, with a gate), `step` and `component` (the pipeline).
"""
