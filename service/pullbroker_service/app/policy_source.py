"""Where the policy comes from: policy.yaml, reloaded when it changes, last good one kept.

`current()` is on every request's path, so it costs a dict lookup most of the time: the file
is stat()ed at most once per `check_interval` and read only when its mtime, size or inode
changed. A policy that fails to parse or validate is logged and ignored; the previous one
stays in force (an edit with a typo must not open or close the whole broker).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import structlog
import yaml

from pullbroker_service.domain.errors import InvalidPolicy
from pullbroker_service.domain.policy import Policy

log = structlog.get_logger()

DEV_DEFAULT_POLICY = """\
# pullbroker policy. Deny by default. The first matching rule that grants roles decides an
# identity's roles; a pull is allowed when a matching rule lists both registry and repository.
# Globs: "*" stays within one "/" segment, "**" crosses segments.
rules:
  - identity: "spiffe://pullbroker.local/admin"
    roles: [admin]
    targets: ["**"]            # deployment targets, e.g. "kubernetes:prod/*", "nitro_enclave:*"
  - identity: "spiffe://pullbroker.local/node/*"
    roles: [node]
    registries: ["*"]
    repositories: ["**"]
"""


class PolicyProvider(Protocol):
    def current(self) -> Policy: ...


class StaticPolicy:
    """A fixed policy (tests, and brokers configured without a file)."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy

    def current(self) -> Policy:
        return self._policy


def load_policy_file(path: Path) -> Policy:
    """Parse and validate `path`; InvalidPolicy names the file and what is wrong."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidPolicy(f"cannot read policy file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise InvalidPolicy(f"policy file {path} is not valid YAML{at}") from exc
    try:
        return Policy.from_mapping(data if data is not None else {})
    except InvalidPolicy as exc:
        raise InvalidPolicy(f"policy file {path}: {exc}") from exc


def write_default_policy(path: Path) -> bool:
    """Create `path` with the development defaults unless it exists; True if written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(DEV_DEFAULT_POLICY)
    return True


Signature = tuple[int, int, int]


class PolicySource:
    """The policy in `path`, reloaded on change. The first load must succeed."""

    def __init__(
        self,
        path: Path,
        *,
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._interval = check_interval
        self._clock = clock
        try:
            # stat before reading: a change that lands in between is seen on the next check.
            self._signature = self._stat()
        except OSError as exc:
            raise InvalidPolicy(f"cannot read policy file {path}: {exc.strerror}") from exc
        self._policy = load_policy_file(path)
        self._checked_at = clock()

    @property
    def path(self) -> Path:
        return self._path

    def current(self) -> Policy:
        now = self._clock()
        if now - self._checked_at >= self._interval:
            self._checked_at = now
            self._reload_if_changed()
        return self._policy

    def _reload_if_changed(self) -> None:
        try:
            signature = self._stat()
        except OSError as exc:
            if self._signature != (0, 0, 0):
                log.warning("policy_reload_failed", path=str(self._path), error=exc.strerror)
                self._signature = (0, 0, 0)
            return
        if signature == self._signature:
            return
        self._signature = signature
        try:
            policy = load_policy_file(self._path)
        except InvalidPolicy as exc:
            log.warning("policy_reload_failed", path=str(self._path), error=str(exc))
            return
        self._policy = policy
        log.info("policy_reloaded", path=str(self._path), rules=len(policy.rules))

    def _stat(self) -> Signature:
        info = os.stat(self._path)
        return (info.st_mtime_ns, info.st_size, info.st_ino)
