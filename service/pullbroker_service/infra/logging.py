"""structlog setup: JSON lines to stderr and <home>/logs/broker.log, with redaction.

Events are snake_case past tense (`registry_created`, `token_issued`); the request id and
caller are bound through contextvars by the API interceptor. Two redactions run on every line,
after exceptions are rendered (so a secret in an exception message is caught too):

- by key name: a key named password, token, secret, ... (or ending in `_password` ...) has its
  value replaced, however deep in the event;
- by value: any string containing a value given to `register_secret_value` (a credential or
  token revealed at the point of use) has that value replaced.
"""

from __future__ import annotations

import atexit
import functools
import logging
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog
from pullbroker_client.registry.errors import install_scrubber
from pullbroker_client.secret import Secret

from pullbroker_service.infra.request_context import merge_call_context

REDACTED = "[redacted]"
SECRET_KEY_NAMES = frozenset(
    {
        "password",
        "token",
        "secret",
        "authorization",
        "credential",
        "key_json",
        "client_secret",
        "secret_access_key",
        "private_key",
        "refresh_token",
        "access_token",
    }
)
# Shorter values would blank common words in every line; credentials are never this short.
MIN_SECRET_LENGTH = 6
# A credential registers a dozen forms (domain/secret_forms.py): room for about a thousand.
_MAX_REGISTERED = 16384


class _SecretValues:
    """Known secret values, matched by one compiled regex (rebuilt only when the set changes).

    Bounded (least recently registered go first) so a long-running broker minting tokens
    does not grow without end; a value is re-registered each time it is revealed.
    """

    def __init__(self, capacity: int = _MAX_REGISTERED) -> None:
        self._lock = threading.Lock()
        self._values: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity
        self._pattern: re.Pattern[str] | None = None
        self._dirty = False

    def add(self, value: str) -> None:
        if len(value) < MIN_SECRET_LENGTH:
            return
        with self._lock:
            if value in self._values:
                self._values.move_to_end(value)
                return
            self._values[value] = None
            while len(self._values) > self._capacity:
                self._values.popitem(last=False)
            self._dirty = True

    def discard(self, value: str) -> None:
        with self._lock:
            if self._values.pop(value, 0) is None:
                self._dirty = True

    def _current(self) -> re.Pattern[str] | None:
        if self._dirty:
            with self._lock:
                # Longest first, so a secret that contains another is replaced whole.
                values = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(map(re.escape, values))) if values else None
                self._dirty = False
        return self._pattern

    def scrub(self, text: str) -> str:
        pattern = self._current()
        if pattern is None or len(text) < MIN_SECRET_LENGTH:
            return text
        return pattern.sub(REDACTED, text)


_SECRETS = _SecretValues()


def register_secret_value(value: str | Secret) -> None:
    """Scrub `value` from every later log line (call where a secret is revealed)."""
    _SECRETS.add(value.reveal() if isinstance(value, Secret) else value)


def register_secret_values(values: Iterable[str | Secret]) -> None:
    for value in values:
        register_secret_value(value)


def forget_secret_value(value: str | Secret) -> None:
    """Stop scrubbing `value` (a deleted credential), so the set stays small."""
    _SECRETS.discard(value.reveal() if isinstance(value, Secret) else value)


def scrub(text: str) -> str:
    """`text` with every registered secret value replaced (for messages leaving the broker)."""
    return _SECRETS.scrub(text)


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and _is_secret_name(key)


@functools.lru_cache(maxsize=1024)
def _is_secret_name(key: str) -> bool:
    name = key.lower().replace("-", "_")
    return name in SECRET_KEY_NAMES or any(name.endswith("_" + n) for n in SECRET_KEY_NAMES)


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return _SECRETS.scrub(value)
    if isinstance(value, dict):
        return {k: REDACTED if _is_secret_key(k) else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    # Anything else is rendered now, so its text passes the value scrub too.
    return _SECRETS.scrub(repr(value))


def redact_processor(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: redaction by key name and by registered secret value."""
    for key in list(event_dict):
        event_dict[key] = REDACTED if _is_secret_key(key) else _redact(event_dict[key])
    return event_dict


class _TeeLogger:
    """Writes each rendered line to several streams under one lock (threads log too)."""

    def __init__(self, streams: list[TextIO]) -> None:
        self._streams = streams
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self._lock:
            for stream in self._streams:
                stream.write(message + "\n")
                stream.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


_open_files: list[TextIO] = []


@atexit.register
def _close_log_files() -> None:
    for handle in _open_files:
        handle.close()
    _open_files.clear()


_debug = False


def debug_enabled() -> bool:
    """Whether debug lines are written (lets hot paths skip building them)."""
    return _debug


def configure_logging(
    *, log_file: Path | None = None, level: str = "info", stderr: bool = True
) -> None:
    """Route structlog (and the stdlib's warnings) to JSON lines on stderr and `log_file`."""
    global _debug
    _debug = level == "debug"
    for old in _open_files:
        old.close()
    _open_files.clear()
    streams: list[TextIO] = [sys.stderr] if stderr else []
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handle = open(log_file, "a", encoding="utf-8")  # noqa: SIM115 - lives until reconfigured
        _open_files.append(handle)
        streams.append(handle)
    tee = _TeeLogger(streams)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            merge_call_context,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            redact_processor,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=lambda *_args: tee,
        # Not cached: tests reconfigure (a new home, a new log file) within one process.
        cache_logger_on_first_use=False,
    )
    _route_stdlib(tee)


class _StdlibToStructlog(logging.Handler):
    """Library warnings (grpc, asyncio) become JSON lines through the same redaction."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = structlog.get_logger(record.name)
        logger.log(record.levelno, "library_logged", message=record.getMessage())


# HTTP and cloud SDK libraries log request bodies, URLs and headers at DEBUG/INFO (botocore
# logs whole API parameters, hvac/urllib3 URLs with paths, httpx/httpcore headers): records
# below WARNING are never even created for them, whatever the broker's own level.
QUIET_LIBRARIES = ("botocore", "boto3", "urllib3", "hvac", "httpx", "httpcore", "s3transfer")


def _route_stdlib(_tee: _TeeLogger) -> None:
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StdlibToStructlog):
            root.removeHandler(handler)
    root.addHandler(_StdlibToStructlog(level=logging.WARNING))


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; `name` is added as `logger_name` on each line."""
    # Initial values on the lazy proxy, not .bind(): bind() would build the logger now, from
    # whatever configuration exists at import time.
    return structlog.get_logger(logger_name=name) if name else structlog.get_logger()


# Registry error messages quote upstream text through pullbroker_client's clean(); with this,
# the broker's known secrets are scrubbed from that text before it is cut to length, wherever
# in this process the message is built.
install_scrubber(scrub)
