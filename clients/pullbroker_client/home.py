"""The pullbroker home folder and the paths inside it.

The folder is, in order: an explicit `--home`, `$PULLBROKER_HOME`, `~/.pullbroker`. The broker
writes it (`pullbroker serve`); every client reads the broker address and certificates from it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pullbroker_client.errors import ConfigurationError

HOME_ENV = "PULLBROKER_HOME"
DEFAULT_HOME = "~/.pullbroker"


@dataclass(frozen=True)
class Home:
    """A home folder; the properties name the files the README's home-folder layout lists."""

    root: Path

    @classmethod
    def resolve(
        cls, explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
    ) -> Home:
        """`explicit`, else $PULLBROKER_HOME, else ~/.pullbroker (made absolute, not created)."""
        environ = os.environ if env is None else env
        chosen = explicit if explicit else (environ.get(HOME_ENV) or DEFAULT_HOME)
        return cls(Path(chosen).expanduser().absolute())

    @property
    def broker_json(self) -> Path:
        return self.root / "broker.json"

    @property
    def policy_yaml(self) -> Path:
        return self.root / "policy.yaml"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def ca_cert(self) -> Path:
        return self.tls_dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.tls_dir / "ca.key"

    def cert(self, name: str) -> Path:
        """`tls/<name>.crt` for name in server, admin, node."""
        return self.tls_dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        """`tls/<name>.key` for name in server, admin, node."""
        return self.tls_dir / f"{name}.key"

    @property
    def metadata_db(self) -> Path:
        return self.root / "metadata.db"

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    @property
    def kek_key(self) -> Path:
        return self.secrets_dir / "kek.key"

    @property
    def secrets_db(self) -> Path:
        return self.secrets_dir / "secrets.db"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def broker_log(self) -> Path:
        return self.logs_dir / "broker.log"

    @property
    def audit_log(self) -> Path:
        """The broker's append-only audit events (JSON lines), apart from its log."""
        return self.root / "audit" / "audit.jsonl"

    def read_address(self) -> str:
        """broker.json's broker address(es) as one client address: `HOST:PORT`, or
        `HOST:PORT,HOST:PORT` when it lists several replicas (see read_addresses)."""
        return ",".join(self.read_addresses())

    def read_addresses(self) -> tuple[str, ...]:
        """The addresses in broker.json: `{"address": "HOST:PORT"}` as `pullbroker serve`
        writes it, or `{"addresses": ["HOST:PORT", ...]}` (several replicas, or one DNS name
        that has them all) as an operator writes it for clients."""
        try:
            data = json.loads(self.broker_json.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(self._no_address()) from None
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot read {self.broker_json} ({type(exc).__name__}): "
                "restart `pullbroker serve` to rewrite it, or pass --broker HOST:PORT"
            ) from None
        found = _addresses_in(data)
        if not found:
            raise ConfigurationError(
                f"{self.broker_json} has no address: restart `pullbroker serve` "
                "or pass --broker HOST:PORT"
            )
        return found

    def _no_address(self) -> str:
        """Advice for a home without broker.json that never sends anyone to make a second one:
        point at a home that has a broker's address, or say this is not a home at all."""
        missing = f"no broker address in {self.broker_json}"
        elsewhere = [
            home
            for home in (Home.resolve(None), Home(self.root / ".pullbroker"))
            if home.root != self.root and home.broker_json.is_file()
        ]
        if elsewhere:
            return (
                f"{missing}; a broker wrote its address to {elsewhere[0].broker_json}: "
                f"pass --home {elsewhere[0].root} (or --broker HOST:PORT)"
            )
        if not (self.root / "tls").is_dir():
            return (
                f"{missing}, and {self.root} is not a pullbroker home: pass the --home the "
                "broker runs with (default ~/.pullbroker), or --broker HOST:PORT"
            )
        return (
            f"{missing}: start the broker with `pullbroker serve --home {self.root}` "
            "or pass --broker HOST:PORT"
        )


def _addresses_in(data: object) -> tuple[str, ...]:
    """`addresses` (a list of strings) if present, else `address` (a string, which may itself
    be a comma-separated list); empty when neither is well-formed."""
    if not isinstance(data, dict):
        return ()
    listed = data.get("addresses")
    if isinstance(listed, list) and listed and all(isinstance(a, str) for a in listed):
        values: list[str] = listed
    elif isinstance(data.get("address"), str):
        values = [data["address"]]
    else:
        return ()
    return tuple(p.strip() for value in values for p in value.split(",") if p.strip())
