"""`kiln chat`: talk to a chat model (a `kiln sft` model directory), or ask it one question."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chat",
        help="chat with a fine-tuned model in the terminal, or ask one --prompt",
        description="Load a chat model (a Hugging Face directory written by `kiln sft`, or "
        "models:/NAME@ALIAS / s3://… of a published one, downloaded and verified) and answer "
        "through its chat template, with a KV cache. Without --prompt: an interactive session "
        "(the conversation so far is the context; /reset forgets it, /quit or Ctrl-D ends).",
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="MODEL",
        help="model directory, s3://… or models:/NAME@ALIAS (e.g. models:/kiln-llama-chat@champion)",
    )
    p.add_argument("--prompt", action="append", help="ask this and print the answer (repeatable)")
    p.add_argument("--system", default="", help="a system message put first in the conversation")
    p.add_argument(
        "--max-new-tokens", type=int, default=200, help="longest answer in tokens (default 200)"
    )
    p.add_argument(
        "--temperature", type=float, default=0.0, help="sampling temperature; 0 = greedy (default)"
    )
    p.add_argument(
        "--top-k", type=int, default=50, help="sample among the k most likely (default 50)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--workdir",
        default="kiln-work",
        metavar="DIR",
        help="where the local MLflow store and S3 stand-in are, for models:/ (default: kiln-work)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tempfile

    from kiln.components.sft.chat import ChatSession, load_chat_model

    with tempfile.TemporaryDirectory(prefix="kiln-chat-") as tmp:
        session = ChatSession(
            *load_chat_model(args.model, tmp, args.workdir),
            system=args.system,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            seed=args.seed,
        )
        if args.prompt:
            for prompt in args.prompt:
                print(session.ask(prompt, remember=False))
            return 0
        return _interactive(session)


def _interactive(session) -> int:
    print("kiln chat: /reset forgets the conversation, /quit (or Ctrl-D) ends", file=sys.stderr)
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        if line in ("/quit", "/exit"):
            return 0
        if line == "/reset":
            session.reset()
            continue
        if line:
            print(f"model> {session.ask(line)}", flush=True)
