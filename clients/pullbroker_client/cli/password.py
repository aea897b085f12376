"""Reading a password: from stdin when asked, else a no-echo prompt on a terminal, never argv."""

from __future__ import annotations

import getpass
import sys
from typing import TextIO

from pullbroker_client.errors import ConfigurationError
from pullbroker_client.secret import Secret

MAX_PASSWORD_BYTES = 64 * 1024  # a service-account JSON key fits; a mis-piped file does not


def read_password(
    *, from_stdin: bool, prompt: str, stdin: TextIO | None = None, tty: bool | None = None
) -> Secret:
    """The password from stdin (`--password-stdin`) or a prompt; refuses when it can do neither."""
    stream = stdin if stdin is not None else sys.stdin
    if from_stdin:
        return _from_stream(stream)
    interactive = tty if tty is not None else _isatty(stream)
    if not interactive:
        raise ConfigurationError(
            "no password given: pipe it in with --password-stdin "
            '(e.g. `printf %s "$TOKEN" | pullbroker registry add ... --password-stdin`)'
        )
    value = getpass.getpass(prompt)
    if not value:
        raise ConfigurationError("the password is empty: type it at the prompt")
    return Secret(value)


def _from_stream(stream: TextIO) -> Secret:
    data = stream.read(MAX_PASSWORD_BYTES + 1)
    if len(data.encode()) > MAX_PASSWORD_BYTES:
        raise ConfigurationError(
            f"the password on stdin is longer than {MAX_PASSWORD_BYTES} bytes: pipe only the secret"
        )
    # One trailing newline comes from `echo` or a file; the secret itself is kept verbatim.
    if data.endswith("\r\n"):
        data = data[:-2]
    elif data.endswith("\n"):
        data = data[:-1]
    if not data:
        raise ConfigurationError("--password-stdin read an empty password: pipe the secret in")
    return Secret(data)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
