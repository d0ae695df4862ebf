"""A chat session with a fine-tuned model: the conversation so far, rendered through the chat
template, continued with the KV cache until `<|end|>` (what `kiln chat` runs).

    session = ChatSession(*load_chat_model("ft/model", tmp))
    session.ask("What does `json.dumps` do?")      # the answer; the turn is remembered
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer

from kiln.components.common.config import Config
from kiln.components.pretrain.export import import_hf
from kiln.components.pretrain.model import Llama
from kiln.components.sft.prepare import resolve_base
from kiln.components.sft.template import ChatIds, chat_ids, render_prompt


def load_chat_model(
    ref: str, download_to: str | Path, workdir: str = "kiln-work"
) -> tuple[Llama, Tokenizer, ChatIds]:
    """The model, tokenizer and chat marker ids of a chat model: a directory, s3://… or
    models:/NAME@ALIAS (downloaded and verified); ValueError for a model without chat tokens."""
    local = resolve_base(ref, Config(), download_to, workdir).directory
    tok = Tokenizer.from_file(str(Path(local) / "tokenizer.json"))
    ids = chat_ids(tok)  # a base model without chat tokens is refused here, by name
    return import_hf(local).eval(), tok, ids


class ChatSession:
    """A conversation with one model; see the module docstring."""

    def __init__(
        self,
        model: Llama,
        tok: Tokenizer,
        ids: ChatIds,
        system: str = "",
        max_new_tokens: int = 200,
        temperature: float = 0.0,
        top_k: int = 50,
        seed: int = 0,
    ):
        self.model, self.tok, self.ids = model, tok, ids
        self.system, self.max_new_tokens = system, max_new_tokens
        self.temperature, self.top_k = temperature, top_k
        self.generator = torch.Generator().manual_seed(seed)
        self.messages: list[dict[str, str]] = []

    def reset(self) -> None:
        self.messages = []

    def _prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """The rendered conversation, dropping the oldest turns until an answer fits."""
        room = max(1, self.model.cfg.max_seq_len - min(self.max_new_tokens, 64))
        head = [{"role": "system", "content": self.system}] if self.system else []
        while True:
            ids = render_prompt(self.tok, head + messages, self.ids)
            if len(ids) <= room or len(messages) <= 1:
                return ids[-room:]
            messages = messages[2:]  # the oldest user turn and its answer

    @torch.no_grad()
    def ask(self, text: str, remember: bool = True) -> str:
        """The model's answer to `text` after the conversation so far."""
        messages = self.messages + [{"role": "user", "content": text}]
        prompt = torch.tensor([self._prompt(messages)])
        out = self.model.generate(
            prompt,
            self.max_new_tokens,
            temperature=self.temperature,
            top_k=self.top_k or None,
            eos_id=self.ids.end,
            generator=self.generator,
        )
        new = out[0, prompt.shape[1] :].tolist()
        answer = self.tok.decode([i for i in new if i != self.ids.end])
        if remember:
            self.messages = messages + [{"role": "assistant", "content": answer}]
        return answer
