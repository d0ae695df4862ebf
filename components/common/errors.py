"""Errors a user can fix: the CLI prints their message as one line, without a traceback.

    raise UserError(f"no MLflow store at {path}; run `kiln run` first or pass --tracking-uri")

Library code raises `UserError` (or `ValueError` for a bad argument) when the cause is the
user's input or environment: a missing file, unset credentials, a server that does not answer.
Anything else is a bug and keeps its traceback. `kiln -v` shows the traceback of both.
"""

from __future__ import annotations

import socket
import urllib.request
from urllib.parse import urlsplit


class UserError(Exception):
    """Something the user can act on; the message says what is wrong and what to do."""


class Unreachable(UserError):
    """A server (MLflow, a KFP API, S3) did not answer at the address it was given."""


def check_reachable(url: str, what: str, timeout_s: float = 5.0) -> None:
    """Raise Unreachable naming `url` unless a TCP connection to its host and port opens
    within `timeout_s` (clients such as MLflow's retry a dead address for minutes).

    Args:
        url: an http(s):// address.
        what: what is expected there, for the message (e.g. "MLflow tracking server").
        timeout_s: how long to wait for the connection.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UserError(f"{url!r} is not a valid {what} address (bad port)") from None
    if not host:
        raise UserError(f"{url!r} is not a valid {what} address: expected http(s)://HOST[:PORT]")
    if urllib.request.getproxies().get(parts.scheme) and not urllib.request.proxy_bypass(host):
        return  # reached through a proxy: a direct connection proves nothing
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        if isinstance(e, TimeoutError):
            reason = f"no answer in {timeout_s:g}s"
        raise Unreachable(f"{what} at {url} does not answer ({reason})") from None
