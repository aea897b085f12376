"""The periodic-jobs lock port: which replica runs the reconciler (and jobs like it) now.

`held()` answers whether this process may run the jobs at this moment, taking the lock when
it is free. The answer holds until the next call; a holder that loses its lock (its database
session died) learns it at the next `held()`. Jobs under it must be idempotent and
conditional (the reconciler's are: etag-checked deletes), since two holders can overlap for
the instant between one losing its session and noticing.

`LocalJobLock` is SQLite's: one host, always held. PostgreSQL's is a session advisory lock
(`postgres_job_lock.PostgresJobLock`): the server releases it when the holder's connection
ends, so a replica killed with SIGKILL hands the jobs on within one check interval.
"""

from __future__ import annotations

from typing import Protocol


class JobLock(Protocol):
    async def held(self) -> bool: ...

    async def close(self) -> None:
        """Release the lock (another replica takes it at its next check)."""
        ...


class LocalJobLock:
    """One host, one broker (or brokers sharing a home, each reconciling idempotently)."""

    async def held(self) -> bool:
        return True

    async def close(self) -> None:
        """Nothing to release."""
