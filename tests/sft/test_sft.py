"""Fine-tuning: the chat format equals transformers', only assistant tokens are learned, runs
resume exactly, and the exported chat model loads in transformers with equal logits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from kiln.components.pretrain import pretrain
from kiln.components.pretrain.runtime import read_train_log
from kiln.components.sft.data import IGNORE, ChatLoader, ChatSplit
from kiln.components.sft.evaluate import evaluate_chat
from kiln.components.sft.finetune import finetune, prepare_chat_tokens
from kiln.components.sft.prepare import BASE_WEIGHTS
from kiln.components.sft.template import CHAT_TOKENS, chat_ids, render, with_chat_tokens
from kiln.components.sft.train import SFTTrainer
from kiln.pipelines.cli import main

MESSAGES = [
    {"role": "system", "content": "Answer  briefly.\n"},
    {"role": "user", "content": "What does `json.dumps` do?"},
    {"role": "assistant", "content": "Serialize an object to a JSON formatted str. naïve 😀"},
    {"role": "user", "content": "And loads?"},
    {"role": "assistant", "content": "The reverse."},
]


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory, base_dir, conversations_dir):
    from kiln.components.common.config import load_config

    cfg = load_config("sft-tiny", overrides=[f"sft.base={base_dir}"])
    return prepare_chat_tokens(conversations_dir, tmp_path_factory.mktemp("run"), cfg)


def test_chat_markers_are_added_after_the_last_id_without_moving_any(base_dir):
    tok = Tokenizer.from_file(str(base_dir / "tokenizer.json"))
    before = tok.get_vocab(with_added_tokens=True)
    ids = chat_ids(with_chat_tokens(tok))
    assert list(ids) == list(range(len(before), len(before) + len(CHAT_TOKENS)))
    after = tok.get_vocab(with_added_tokens=True)
    assert all(after[piece] == i for piece, i in before.items())


def test_new_marker_rows_start_as_the_mean_of_the_base_rows(base_dir, chat_dir):
    manifest = json.loads((chat_dir / "manifest.json").read_text())
    base = load_file(base_dir / "model.safetensors")["model.embed_tokens.weight"]
    resized = load_file(chat_dir / BASE_WEIGHTS)["embed_tokens.weight"]
    n = manifest["base"]["tokens"]
    assert torch.equal(resized[:n], base[:n])
    for i in manifest["chat_ids"].values():
        torch.testing.assert_close(resized[i], base[:n].mean(0))


def test_kiln_rendering_equals_transformers_apply_chat_template(base_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    from kiln.components.pretrain.export import export_hf, import_hf
    from kiln.components.sft.template import CHAT_TEMPLATE, END

    tok = with_chat_tokens(Tokenizer.from_file(str(base_dir / "tokenizer.json")))
    tok.save(str(tmp_path / "tokenizer.json"))
    model = import_hf(base_dir)
    export_hf(
        model.state_dict(), model.cfg, tmp_path / "m", tmp_path / "tokenizer.json",
        chat_template=CHAT_TEMPLATE, eos_token=END,
    )  # fmt: skip
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "m")
    ours = render(tok, MESSAGES)
    theirs = hf.apply_chat_template(
        MESSAGES, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert ours.ids == list(theirs["input_ids"])
    assert ours.mask == list(theirs["assistant_masks"])
    prompt = hf.apply_chat_template(MESSAGES[:2], tokenize=True, add_generation_prompt=True)
    prompt = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
    assert render(tok, MESSAGES[:2]).ids + [chat_ids(tok).assistant] == list(prompt)
    assert hf.eos_token == END


def test_only_assistant_content_and_its_end_marker_are_targets(base_dir):
    tok = with_chat_tokens(Tokenizer.from_file(str(base_dir / "tokenizer.json")))
    ids = chat_ids(tok)
    r = render(tok, MESSAGES)
    trained = tok.decode(
        [i for i, m in zip(r.ids, r.mask, strict=True) if m], skip_special_tokens=False
    )
    assert (
        trained == "Serialize an object to a JSON formatted str. naïve 😀<|end|>The reverse.<|end|>"
    )
    split = ChatSplit(
        np.array(r.ids, np.uint32), np.array(r.mask, np.uint8), np.array([0, len(r.ids)])
    )
    x, y = ChatLoader(split, seq_len=len(r.ids) - 1, batch_size=1, shuffle=False).next_batch()
    assert x[0].tolist() == r.ids[:-1]
    assert [t for t in y[0].tolist() if t != IGNORE] == [
        i for i, m in zip(r.ids, r.mask, strict=True) if m
    ]
    assert ids.end in y[0].tolist()


def test_changing_user_tokens_leaves_the_targets_and_their_loss_unchanged(base_dir):
    """Two conversation sets that differ only in what the user says (same token counts, so the
    same packing) give identical targets: user tokens are never learned. They still condition
    the answers, as inputs: that is the point of a prompt."""
    tok = with_chat_tokens(Tokenizer.from_file(str(base_dir / "tokenizer.json")))

    def batch(user_text):
        convs = [[{"role": "user", "content": user_text}, MESSAGES[2]], MESSAGES[1:]]
        rendered = [render(tok, c) for c in convs]
        lengths = [len(r.ids) for r in rendered]
        split = ChatSplit(
            np.array([i for r in rendered for i in r.ids], np.uint32),
            np.array([m for r in rendered for m in r.mask], np.uint8),
            np.cumsum([0, *lengths]),
        )
        return ChatLoader(split, seq_len=sum(lengths) - 1, batch_size=1, shuffle=False).next_batch()

    a, b = "What does `json.dumps` do?", "What does `json.loads` do?"
    assert len(tok.encode(a).ids) == len(tok.encode(b).ids)
    (xa, ya), (xb, yb) = batch(a), batch(b)
    assert not torch.equal(xa, xb) and torch.equal(ya, yb)


def test_the_loss_reads_assistant_targets_only(sft_cfg, chat_dir, tmp_path):
    """Loss and gradients equal a per-token cross-entropy over the assistant targets alone, and
    tokens after the last target (hidden by the causal mask) change neither."""
    from kiln.components.pretrain.runtime import Runtime

    trainer = SFTTrainer(sft_cfg, chat_dir, Runtime(tmp_path))
    x, y = trainer.loader.next_batch()
    count = float((y != IGNORE).sum())
    loss = trainer.loss(x, y, count)
    logits = trainer.model(x)
    keep = y != IGNORE
    reference = torch.nn.functional.cross_entropy(logits[keep], y[keep], reduction="sum") / count
    torch.testing.assert_close(loss, reference)
    grads = torch.autograd.grad(loss, list(trainer.model.parameters()))
    ref_grads = torch.autograd.grad(reference, list(trainer.model.parameters()))
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r)
    row = 0
    tail = int(keep[row].nonzero()[-1]) + 1  # inputs after the row's last target
    if tail < x.shape[1]:
        changed = x.clone()
        changed[row, tail:] = (changed[row, tail:] + 1) % 300
        assert torch.equal(trainer.loss(changed, y, count), loss)
    target = keep.nonzero()[0]
    wrong = y.clone()
    wrong[target[0], target[1]] = (y[target[0], target[1]] + 1) % 300
    assert not torch.equal(trainer.loss(x, wrong, count), loss)


def test_step_loss_weighs_every_assistant_token_equally(sft_cfg, chat_dir, tmp_path):
    from kiln.components.pretrain.runtime import Runtime

    trainer = SFTTrainer(sft_cfg, chat_dir, Runtime(tmp_path))
    batches = [trainer.loader.next_batch() for _ in range(2)]
    assert trainer.target_count(batches) == sum(int((y != IGNORE).sum()) for _, y in batches)


def test_sft_exact_resume_is_bit_identical(sft_cfg, chat_dir, tmp_path):
    straight = pretrain(sft_cfg, chat_dir, tmp_path / "a")
    first = sft_cfg
    first.train.stop_after_steps = 4
    pretrain(first, chat_dir, tmp_path / "b")
    first.train.stop_after_steps = 0
    resumed = pretrain(first, chat_dir, tmp_path / "b", resume=True)
    assert resumed.step == straight.step == 8
    assert read_train_log(tmp_path / "a") == read_train_log(tmp_path / "b")
    a = load_file(f"{straight.checkpoint}/model.safetensors")
    b = load_file(f"{resumed.checkpoint}/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fine_tuned_model_beats_its_base_and_loads_in_transformers(
    sft_cfg, base_dir, conversations_dir, tmp_path
):
    transformers = pytest.importorskip("transformers")
    from kiln.components.pretrain.export import import_hf

    sft_cfg.sft.epochs, sft_cfg.optim.lr = 2.0, 3e-3
    summary = finetune(conversations_dir, tmp_path / "ft", sft_cfg)
    report = evaluate_chat(summary["model_dir"], summary["chat_tokens"], sft_cfg, tmp_path / "ev")
    assert report["val_loss"] < report["baseline"]["val_loss"]
    assert report["gate"]["passed"] and report["kind"] == "sft"
    hf = transformers.AutoModelForCausalLM.from_pretrained(summary["model_dir"]).eval()
    htok = transformers.AutoTokenizer.from_pretrained(summary["model_dir"])
    ids = htok.apply_chat_template(MESSAGES, tokenize=True, return_dict=True)["input_ids"]
    x = torch.tensor([list(ids)])
    with torch.no_grad():
        diff = (import_hf(summary["model_dir"]).eval()(x) - hf(x).logits).abs().max()
    assert float(diff) < 1e-4


def test_sft_refuses_a_context_longer_than_the_base(sft_cfg, chat_dir, tmp_path):
    from kiln.components.pretrain.runtime import Runtime

    sft_cfg.data.seq_len = sft_cfg.model.max_seq_len = 256
    with pytest.raises(ValueError, match="longer than the base model's context"):
        SFTTrainer(sft_cfg, chat_dir, Runtime(tmp_path))


def test_kiln_chat_answers_a_prompt_and_refuses_a_base_model(
    sft_cfg, base_dir, conversations_dir, tmp_path, capsys
):
    model_dir = finetune(conversations_dir, tmp_path / "ft", sft_cfg)["model_dir"]
    assert main(["chat", "--model", model_dir, "--prompt", "Hi", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.strip() != ""
    assert main(["chat", "--model", str(base_dir), "--prompt", "Hi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no chat tokens" in err[0]
