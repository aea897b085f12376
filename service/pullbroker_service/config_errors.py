"""The one error configuration raises (shared by config.py and config_secrets.py)."""

from __future__ import annotations


class ConfigError(Exception):
    """The configuration file or a flag is wrong; the message says which and how to fix it."""
