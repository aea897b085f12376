"""One more token-auth registry for the node tests, set up the way world.py sets up the
first: a real distribution registry with its own token server (own service, issuer and
signing key) and users, behind a recording front door, registered with the broker as a
generic record that the node policy (`nodes-*`) lets nodes pull from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.harness.broker_process import BrokerProcess
from tests.harness.canary import new_canary
from tests.harness.certs import TestCA
from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import PUSHER, PushedImage, seed_image
from tests.harness.token_server import TokenServer
from tests.integration.nodes.world import RecordingDoor


@dataclass
class TokenUpstream:
    """A registry the broker holds `user`'s credential for, reached through `door`."""

    registry: TokenAuthRegistry
    door: RecordingDoor
    broker: BrokerProcess
    record: str  # the record's resource name at the broker
    user: str
    seed_dir: Path

    @property
    def host(self) -> str:
        """What image references and the broker record name: the door's host."""
        return self.door.host

    @property
    def token_server(self) -> TokenServer:
        return self.registry.token_server

    @property
    def issuer(self) -> str:
        return self.registry.issuer

    def passwords(self) -> list[str]:
        """Every long-lived password of this registry (never on a node)."""
        return list(self.registry.users.values())

    def tokens_seen(self) -> list[str]:
        """Bearer tokens sent to this registry's blob endpoint (through the door)."""
        return sorted({a.split(" ", 1)[1] for a in self.door.blob_authorizations if a})

    def seed(self, repository: str, tag: str, sizes: list[int]) -> PushedImage:
        """A fresh image (unique random layers), pushed by the registry's pusher."""
        return seed_image(self.registry, self.seed_dir, repository, tag, sizes)

    def reference(self, image: PushedImage) -> str:
        return f"{self.host}/{image.repository}:{image.tag}"

    def stop(self) -> None:
        """Delete the broker record (later modules list what nodes may pull), then stop."""
        try:
            with self.broker.admin() as admin:
                admin.delete_registry(self.record)
        finally:
            self.door.stop()
            self.registry.stop()


def start_token_upstream(
    workdir: Path, ca: TestCA, broker: BrokerProcess, *, record: str, user: str, name: str
) -> TokenUpstream:
    """Start registry `name` (token service `name`, issuer `name-issuer`), give `user` pull
    on team/* and the pusher everything, and register `user`'s credential as `record`."""
    registry = TokenAuthRegistry(workdir / "registry", ca, service=name, issuer=f"{name}-issuer")
    registry.add_user(user, new_canary(user), {"team/*": ["pull"]})
    registry.add_user(PUSHER, new_canary(PUSHER), {"team/**": ["*"]})
    registry.start()
    door = RecordingDoor(registry, ca)
    try:
        door.start()
        created = broker.register(record, door.url, ca.pem, user, registry.users[user])
    except BaseException:
        door.stop()
        registry.stop()
        raise
    seed_dir = workdir / "seed"
    seed_dir.mkdir()
    return TokenUpstream(registry, door, broker, created, user, seed_dir)
