"""The `audit` section: the audit file's rotation (the shared trail needs no settings: it is
the `database`'s, when one is configured)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AuditConfig:
    """<home>/audit/audit.jsonl rotates by size."""

    max_file_bytes: int = 100 * 1024 * 1024
    """The file is rotated (to audit.jsonl.1, .2, ...) once it reaches this size; 0 never
    rotates (an external logrotate then owns it: copytruncate is not needed, the broker
    reopens a file that was renamed away)."""

    keep_files: int = 5
    """Rotated files kept beside the current one; older ones are deleted. Ship them
    elsewhere before they go if the trail must outlive them (or configure a database)."""
