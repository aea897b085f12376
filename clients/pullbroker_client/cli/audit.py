"""`pullbroker audit tail [--follow] [--identity GLOB] [--registry R] [--outcome O] [-n N]`.

Where the events come from:
- `--file PATH`, or the home folder's audit file when it exists (on the broker's host, as
  the broker's user: the file is 0600): that one broker's JSON lines. `--follow` survives
  the file being rotated.
- otherwise (`--broker`, or a home with no audit file, e.g. an admin workstation): the
  broker's AuditService, i.e. the shared trail every replica writes to its database
  (audit_remote.py); a broker without a database says so.
Filters combine; the identity filter is a glob (`spiffe://pullbroker.local/node/*`).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pullbroker_client.cli.audit_remote import remote_tail
from pullbroker_client.cli.common import client_for, home_of, wants_json
from pullbroker_client.cli.parser import add_common_options
from pullbroker_client.errors import ConfigurationError

"""Where the broker writes audit events, relative to its home folder."""

OUTCOMES = ("allowed", "denied", "failed")
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Filters:
    identity: str = ""
    registry: str = ""
    outcome: str = ""

    def match(self, event: dict[str, Any]) -> bool:
        if self.identity and not fnmatch.fnmatchcase(str(event.get("identity", "")), self.identity):
            return False
        if self.outcome and event.get("outcome") != self.outcome:
            return False
        if self.registry:
            value = str(event.get("registry", ""))
            wanted = {self.registry, f"registries/{self.registry}"}
            if value not in wanted and not fnmatch.fnmatchcase(value, self.registry):
                return False
        return True


def add_audit_commands(subparsers: Any) -> None:
    """Attach `audit ...` to the top-level subparsers."""
    audit = subparsers.add_parser(
        "audit", help="read the audit trail (every replica's, or the audit file on the host)"
    )
    commands = audit.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    tail = commands.add_parser("tail", help="the last audit events, optionally following")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    tail.add_argument("--identity", default="", help="identity, or a glob of identities")
    tail.add_argument("--registry", default="", help="registries/<id>, its id, or a glob")
    tail.add_argument(
        "--outcome", default="", choices=("", *OUTCOMES), help="allowed|denied|failed"
    )
    tail.add_argument("-n", "--lines", type=int, default=20, help="events to show (default 20)")
    tail.add_argument("--file", default=None, help="audit file (default: <home>/audit/audit.jsonl)")
    tail.set_defaults(func=cmd_tail)
    add_common_options(tail)


def cmd_tail(args: argparse.Namespace) -> int:
    path = Path(args.file).expanduser() if args.file else home_of(args).audit_log
    filters = Filters(args.identity, args.registry, args.outcome)
    show = _printer(wants_json(args))
    if not args.file and (getattr(args, "broker", None) or not path.exists()):
        with client_for(args) as client:
            remote_tail(client, filters, max(0, args.lines), show, follow=args.follow)
        return 0
    with _open(path) as file:
        for event in last_events(file, filters, max(0, args.lines)):
            show(event)
        if args.follow:
            for event in follow(path, file, filters, stop=lambda: False):
                show(event)
    return 0


def last_events(file: Any, filters: Filters, count: int) -> list[dict[str, Any]]:
    """The last `count` events of `file` that pass `filters` (the file is read to its end)."""
    kept: deque[dict[str, Any]] = deque(maxlen=count or None)
    for line in file:
        event = parse_line(line)
        if event is not None and filters.match(event):
            kept.append(event)
    return list(kept) if count else []


def follow(
    path: Path,
    file: Any,
    filters: Filters,
    *,
    stop: Callable[[], bool],
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[dict[str, Any]]:
    """Events appended to `file` from where it was left, until `stop()`; reopens `path` when
    it is replaced (same name, other inode) or truncated. `file` stays the caller's to close;
    files opened here are closed here."""
    partial = ""
    owned: Any = None
    try:
        while not stop():
            chunk = file.read()
            if chunk:
                partial += chunk
                *lines, partial = partial.split("\n")
                for line in lines:
                    event = parse_line(line)
                    if event is not None and filters.match(event):
                        yield event
                continue
            if _replaced(path, file):
                if owned is not None:
                    owned.close()
                file = owned = _open(path)
                partial = ""
                continue
            sleep(POLL_SECONDS)
    finally:
        if owned is not None:
            owned.close()


def parse_line(line: str) -> dict[str, Any] | None:
    """One event, or None for a blank or damaged line (a crash can cut the last one short)."""
    line = line.strip()
    if not line:
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def event_line(event: dict[str, Any]) -> str:
    """time outcome action identity registry repository [deployment] [digest] [reason]."""
    parts = [
        str(event.get("time", "")),
        str(event.get("outcome", "")).upper(),
        str(event.get("action", "")),
        str(event.get("identity", "")) or "-",
        str(event.get("registry", "")) or "-",
        str(event.get("repository", "")) or "-",
    ]
    for key in ("scope", "deployment", "digest", "request_id"):
        if event.get(key):
            parts.append(f"{key}={event[key]}")
    if event.get("reason"):
        parts.append(f"reason: {event['reason']}")
    return " ".join(parts)


def _printer(as_json: bool) -> Callable[[dict[str, Any]], None]:
    def show(event: dict[str, Any]) -> None:
        text = json.dumps(event, sort_keys=True) if as_json else event_line(event)
        print(text, flush=True)

    return show


def _open(path: Path) -> Any:
    try:
        return path.open(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise ConfigurationError(
            f"no audit log at {path}: the broker writes it there once something is audited "
            "(pass --home or --file if it lives elsewhere)"
        ) from None
    except PermissionError:
        raise ConfigurationError(
            f"cannot read {path}: the audit log is private to the broker's user; run as that user"
        ) from None


def _replaced(path: Path, file: Any) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False  # rotated away and not recreated yet: keep waiting
    mine = os.fstat(file.fileno())
    return now.st_ino != mine.st_ino or now.st_size < file.tell()
