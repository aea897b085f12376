"""The root of every error pullbroker_client raises.

ClientError
├── RegistryError                     (registry/errors.py: the OCI client's tree)
├── BrokerCallError                   (broker.py: a broker RPC failed, with its status)
└── ConfigurationError                a home folder, certificate or flag is missing or wrong
"""

from __future__ import annotations


class ClientError(Exception):
    """Base of every error raised by pullbroker_client. Messages are for a person to act on."""


class ConfigurationError(ClientError):
    """A home folder, certificate file or flag is missing or wrong."""
