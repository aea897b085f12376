"""What the sidecar tests pull from: the broker process, the token registry behind a front
door, and the standard images. The sidecar runs as its console command would, in a
subprocess (tests/harness/sidecar.py), so exit codes, stdout/stderr and peak RSS are its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.harness.broker_process import BrokerProcess
from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import PushedImage, StandardImages, seed_image
from tests.integration.sidecar.frontdoor import FrontDoor


@dataclass(frozen=True)
class SidecarWorld:
    """What the sidecar tests pull from."""

    broker: BrokerProcess
    door: FrontDoor
    registry: TokenAuthRegistry
    images: StandardImages
    second: PushedImage  # team/sidecar:v2, a second tag to pull beside team/app:v1
    seed_dir: Path

    @property
    def home(self) -> Path:
        return self.broker.home.root

    def via_door(self, image: PushedImage, tag: str | None = None) -> str:
        """The image's reference through the front door (the host the broker record has)."""
        return f"{self.door.host}/{image.repository}:{tag or image.tag}"

    def seed(self, repository: str, tag: str, sizes: list[int]) -> PushedImage:
        """Push a fresh image (unique random layers) for a test that alters the registry."""
        return seed_image(self.registry, self.seed_dir, repository, tag, sizes)
