"""`kiln sft-data`: chat records → validated, deduplicated train/val JSONL + stats.json.

    kiln sft-data --input chats/ "more/*.jsonl.gz" s3://bucket/chats/ --output data/sft \
        --set sft.val_fraction=0.05 --set sft.system_prompt="You are helpful."
"""

from __future__ import annotations

import argparse

from kiln.pipelines.commands.common import add_config_args, config_from_args

DESCRIPTION = """\
Read conversations for supervised fine-tuning, check them, drop exact duplicates, split them
into train and val by content hash, and write train.jsonl, val.jsonl (one {"messages": [...]}
per line), rejects.jsonl (file, line, reason, excerpt of every rejected record) and stats.json
(records_in = kept + duplicates + rejected, by reason) to --output, replacing it.

Formats: .jsonl (one record per line) or .json (a list of records), optionally .gz or .zst.
Records: {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]} (other
keys ignored), or {"prompt": "...", "completion": "..."} (a user and an assistant message).
Content is only NFC-normalized and CRLF -> LF; sft.system_prompt is put first where a
conversation has no system message.

Reject reasons:
  invalid_json           a line (or .json file) that is not JSON in valid UTF-8/Unicode
  not_an_object          a record or a message that is not a JSON object
  missing_messages       no "messages" list and no "prompt" + "completion"
  empty_messages         "messages" is an empty list
  bad_role               a role other than system, user or assistant
  non_string_content     a content, prompt or completion that is not a string
  empty_content          an empty or whitespace-only message
  assistant_first        the first message after the system message is not from the user
  system_not_first       a system message that is not the first message
  roles_not_alternating  roles after the system message are not user, assistant, user, ...
  no_assistant_reply     the conversation does not end with an assistant message
  message_too_long       a message over sft.max_message_chars characters (or a 64 MiB line)
  unreadable_file        a file that cannot be opened or decompressed (counted as one record)

Knobs: sft.val_fraction, sft.min_val, sft.max_message_chars, sft.system_prompt
(`kiln config --fields`), e.g. --set sft.val_fraction=0.05.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sft-data",
        help="check, deduplicate and split conversations for supervised fine-tuning",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--input",
        required=True,
        nargs="+",
        action="extend",
        metavar="PATH_OR_URI",
        help="inputs: .jsonl/.json files (optionally .gz/.zst), directories, globs (quote "
        "them) or s3://bucket/prefix; other files found are listed in stats.json. Repeatable.",
    )
    p.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help="directory or s3:// prefix to write (replaced as a whole)",
    )
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kiln.components.sft.conversations import conversations

    cfg = config_from_args(args).sft
    stats = conversations(args.input, args.output, cfg)
    print(f"sft-data: {stats.summary()}")
    return 0
