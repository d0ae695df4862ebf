"""`kiln`: the command line for every stage of the pipeline.

Each subcommand lives in `pipelines/commands/<name>.py` and exposes `register(subparsers)`, which
adds its parser and sets `func` to the handler. `kiln COMMAND --help` explains every option.
Command modules import heavy libraries (torch, kfp, mlflow, ray) inside their handlers, so that
building the parser, and `kiln --help`, stays fast.

Errors the user can fix end in one line, `kiln COMMAND: error: WHAT`, and a non-zero exit code
(2: bad input; 1: a service, storage or integrity failure); `kiln -v` adds the traceback. Any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

from kiln.components.common.errors import Unreachable, UserError
from kiln.components.common.progress import LOG_FORMAT
from kiln.components.common.storage.settings import IntegrityError, StorageError

# Order here is the order shown by `kiln --help`.
COMMANDS = [
    "ingest",
    "tokenize",
    "train",
    "evaluate",
    "publish",
    "sft_data",  # module name; the command is `kiln sft-data`
    "sft",
    "chat",
    "generate",
    "config",
    "plan",
    "sweep",
    "models",
    "artifacts",
    "run",
    "compile",
    "submit",
    "runs",
    "deploy",
]
# The `dest` of each command's own ACTION subparsers, to name `kiln artifacts get` in errors.
_ACTION_DESTS = ("models_command", "artifacts_command", "action")
_NO_S3_CREDENTIALS = {
    "botocore.exceptions.NoCredentialsError",
    "botocore.exceptions.PartialCredentialsError",
}
_S3_CREDENTIALS_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (with AWS_S3_ENDPOINT for an "
    "S3-compatible server), or attach a data connection that sets them"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiln",
        description="Kiln: pretrain LLaMA-style language models from raw text "
        "(ingest → tokenize → pretrain → evaluate → publish).",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        dest="debug",
        action="store_true",
        help="debug logging, and the full traceback of an error",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"kiln.pipelines.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        # `kiln run --verbose` (its own flag) also asks for debug logging.
        level=logging.DEBUG if args.debug or getattr(args, "verbose", False) else logging.INFO,
        format=LOG_FORMAT,
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        known = user_error(e)
        if known is None:
            raise  # a bug: keep the traceback
        message, code = known
        if args.debug:
            traceback.print_exception(e)
        print(f"kiln {command_name(args)}: error: {message}", file=sys.stderr)
        return code


def command_name(args: argparse.Namespace) -> str:
    """`artifacts get`, `runs list`, `train`: the command as the user typed it."""
    action = next((getattr(args, d) for d in _ACTION_DESTS if getattr(args, d, None)), "")
    return f"{args.command} {action}".strip()


def user_error(e: BaseException) -> tuple[str, int] | None:
    """(one-line message, exit code) for an error the user can act on; None for a bug.

    Kiln's own errors carry their message; the few third-party exceptions a user meets in the
    first hour (no S3 credentials, S3 refusing a request, a server that does not answer, a
    checkpoint of another model shape) are translated here, matched by class name so that this
    module imports none of those libraries.
    """
    names = {f"{c.__module__}.{c.__qualname__}" for c in type(e).__mro__}
    text = _one_line(str(e))
    if isinstance(e, Unreachable):
        return text, 1
    if names & _NO_S3_CREDENTIALS:
        return f"no S3 credentials ({text}): {_S3_CREDENTIALS_HINT}", 1
    if names & {"botocore.exceptions.ClientError", "boto3.exceptions.S3UploadFailedError"}:
        return f"S3 refused the request: {text}{_s3_access_hint(text)}", 1
    if "botocore.exceptions.EndpointConnectionError" in names:
        return f"S3 does not answer: {text}; check AWS_S3_ENDPOINT", 1
    if names & {"urllib3.exceptions.MaxRetryError", "requests.exceptions.ConnectionError"}:
        return f"cannot reach {_address(e)} ({_reason(e)})", 1
    if "mlflow.exceptions.MlflowException" in names and "API request to" in text:
        return f"MLflow did not answer: {text}", 1
    if "kfp_server_api.exceptions.ApiException" in names:
        status, reason = getattr(e, "status", "?"), getattr(e, "reason", "") or ""
        body = _one_line(str(getattr(e, "body", "") or ""), 300)
        return f"the KFP API server answered HTTP {status} {reason} {body}".rstrip(), 1
    if "kubernetes.config.config_exception.ConfigException" in names:
        return f"no Kubernetes access ({text}): log in first (`oc login` or a kubeconfig)", 1
    if isinstance(e, StorageError | IntegrityError):
        return text, 1
    if isinstance(e, RuntimeError) and "Error(s) in loading state_dict" in str(e):
        return (
            f"the checkpoint was trained with a different model shape ({text}); drop the "
            "--set model.* overrides or use a new --output"
        ), 2
    if isinstance(e, UserError | ValueError | FileNotFoundError):
        return text, 2
    return None


def _one_line(text: str, limit: int = 600) -> str:
    """The message on one line, cut at `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _s3_access_hint(text: str) -> str:
    codes = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden", "403")
    return f"; {_S3_CREDENTIALS_HINT}" if any(c in text for c in codes) else ""


def _address(e: BaseException) -> str:
    """The URL a urllib3 / requests connection error was about."""
    pool = getattr(e, "pool", None)
    if pool is not None:
        port = f":{pool.port}" if pool.port else ""
        return f"{pool.scheme}://{pool.host}{port}{getattr(e, 'url', '') or ''}"
    request = getattr(e, "request", None)
    return getattr(request, "url", None) or "the server"


def _reason(e: BaseException) -> str:
    reason = getattr(e, "reason", None) or (e.args[0] if e.args else e)
    inner = getattr(reason, "reason", None) or reason  # MaxRetryError → NewConnectionError
    # "<urllib3.connection.HTTPConnection object at 0x…>: Failed to establish …": drop the repr
    return _one_line(str(inner).split(">: ", 1)[-1], 200)


if __name__ == "__main__":
    sys.exit(main())
