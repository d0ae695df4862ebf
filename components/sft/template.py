"""The chat format: turn-boundary special tokens, a Jinja chat template, and Kiln's own rendering.

A conversation renders as

    <|system|>You are terse.<|end|><|user|>Hi<|end|><|assistant|>Hello.<|end|>

with no other text between turns. The role and end markers are special tokens added to the base
tokenizer after its last id (existing ids never change), so the text between two markers is
tokenized on its own, exactly as `transformers` tokenizes the template's output: Kiln's
`render` (marker ids + each message's ids) equals `apply_chat_template(..., tokenize=True)`.
Only assistant content and its `<|end|>` are trained (mask 1); the template wraps exactly those
in `{% generation %}`, so `return_assistant_tokens_mask=True` gives the same mask.

    tok = with_chat_tokens(load_tokenizer("base/tokenizer.json"))
    ids, mask = render(tok, [{"role": "user", "content": "Hi"}, {"role": "assistant", ...}])
    prompt = render_prompt(tok, [{"role": "user", "content": "Hi"}])   # ends with <|assistant|>
"""

from __future__ import annotations

from typing import NamedTuple

from tokenizers import AddedToken, Tokenizer

ROLES = ("system", "user", "assistant")
END = "<|end|>"
CHAT_TOKENS = tuple(f"<|{r}|>" for r in ROLES) + (END,)

# One line: whitespace in a Jinja template is output. Assistant content plus its end marker is
# the generation span (what is trained, and what `return_assistant_tokens_mask` marks).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|assistant|>' }}{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}"
    "{%- else -%}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>' }}{%- endif -%}"
)


class ChatIds(NamedTuple):
    """Ids of the chat markers in a tokenizer."""

    system: int
    user: int
    assistant: int
    end: int

    def role(self, name: str) -> int:
        return getattr(self, name)


class Rendered(NamedTuple):
    """A rendered conversation: token ids and which of them are trained targets (1)."""

    ids: list[int]
    mask: list[int]


def with_chat_tokens(tok: Tokenizer) -> Tokenizer:
    """`tok` with the chat markers added as special tokens after its last id (a no-op for a
    tokenizer that has them already, e.g. a chat model fine-tuned again)."""
    missing = [t for t in CHAT_TOKENS if tok.token_to_id(t) is None]
    if missing:
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    return tok


def chat_ids(tok: Tokenizer) -> ChatIds:
    """The marker ids; ValueError when the tokenizer has no chat tokens."""
    ids = [tok.token_to_id(t) for t in CHAT_TOKENS]
    if any(i is None for i in ids):
        raise ValueError(
            f"the tokenizer has no chat tokens ({', '.join(CHAT_TOKENS)}): not a Kiln chat model"
        )
    return ChatIds(*ids)


def render(tok: Tokenizer, messages: list[dict], ids: ChatIds | None = None) -> Rendered:
    """Token ids and loss mask of a whole conversation (see the module docstring)."""
    ids = ids or chat_ids(tok)
    contents = tok.encode_batch([m["content"] for m in messages], add_special_tokens=False)
    out, mask = [], []
    for message, encoding in zip(messages, contents, strict=True):
        trained = int(message["role"] == "assistant")
        out += [ids.role(message["role"]), *encoding.ids, ids.end]
        mask += [0] + [trained] * (len(encoding.ids) + 1)
    return Rendered(out, mask)


def render_prompt(tok: Tokenizer, messages: list[dict], ids: ChatIds | None = None) -> list[int]:
    """Ids of a conversation so far plus `<|assistant|>`: what the model continues."""
    ids = ids or chat_ids(tok)
    return render(tok, messages, ids).ids + [ids.assistant]
