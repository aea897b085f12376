"""The one error configuration raises (shared by broker.py and secret_backends.py)."""

from __future__ import annotations

from pullbroker_service.domain.errors import BrokerError


class ConfigError(BrokerError):
    """The configuration file or a flag is wrong; the message says which and how to fix it."""
