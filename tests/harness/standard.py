"""The standard test world shared by tests, benchmarks and `make demo`.

Users of the token registry (passwords are fresh canaries each run, see `registry.users`):
  alice   pull+push on team/*
  bob     pull on team/app only
  pusher  pull+push on team/** and public/** (seeds the images)
  (anonymous) pull on public/*
Images: team/app:v1 (one platform), team/multi:v1 (index: linux/amd64 + linux/arm64),
team/other:v1, public/hello:v1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.harness.canary import new_canary
from tests.harness.certs import TestCA
from tests.harness.images import BuiltImage, build_image, push_image
from tests.harness.registry import TokenAuthRegistry

ALICE = "alice"
BOB = "bob"
PUSHER = "pusher"
PLATFORMS = (("linux", "amd64"), ("linux", "arm64"))


@dataclass(frozen=True)
class PushedImage:
    """An image in the registry: where it is and what it is made of."""

    repository: str
    tag: str
    digest: str  # what the tag resolves to (index digest for team/multi)
    image: BuiltImage
    host: str

    @property
    def reference(self) -> str:
        """`127.0.0.1:PORT/team/app:v1`"""
        return f"{self.host}/{self.repository}:{self.tag}"

    @property
    def digest_reference(self) -> str:
        """`127.0.0.1:PORT/team/app@sha256:...`"""
        return f"{self.host}/{self.repository}@{self.digest}"

    @property
    def manifest_digest(self) -> str:
        """The (first) platform manifest digest."""
        return self.image.manifest_digest

    @property
    def layer_digests(self) -> list[str]:
        """All layer digests (every platform)."""
        return self.image.layer_digests


@dataclass(frozen=True)
class StandardImages:
    """The images every test may rely on."""

    app: PushedImage
    multi: PushedImage
    other: PushedImage
    hello: PushedImage

    def all(self) -> list[PushedImage]:
        """Every standard image."""
        return [self.app, self.multi, self.other, self.hello]


def start_standard_registry(workdir: Path, ca: TestCA | None = None) -> TokenAuthRegistry:
    """Start a token-auth registry with the standard users and anonymous grants."""
    registry = TokenAuthRegistry(workdir, ca)
    add_standard_users(registry)
    return registry.start()


def add_standard_users(registry: TokenAuthRegistry) -> None:
    """alice, bob, pusher and anonymous public pulls, with fresh canary passwords."""
    registry.add_user(ALICE, new_canary(ALICE), {"team/*": ["pull", "push"]})
    registry.add_user(BOB, new_canary(BOB), {"team/app": ["pull"]})
    registry.add_user(PUSHER, new_canary(PUSHER), {"team/**": ["*"], "public/**": ["*"]})
    registry.set_anonymous_grants({"public/*": ["pull"]})


def seed_image(
    registry: TokenAuthRegistry,
    layout_dir: Path,
    repository: str,
    tag: str,
    layer_sizes: list[int],
    platforms: tuple[tuple[str, str], ...] | None = None,
) -> PushedImage:
    """Build an image into `layout_dir` and push it as the pusher user."""
    image = build_image(layout_dir, f"{repository.replace('/', '-')}-{tag}", layer_sizes, platforms)
    digest = push_image(
        image, registry, repository, tag, username=PUSHER, password=registry.users[PUSHER]
    )
    return PushedImage(repository, tag, digest, image, registry.host)


def push_standard_images(registry: TokenAuthRegistry, layout_dir: Path) -> StandardImages:
    """Build and push the standard images (small: a few KiB each)."""
    return StandardImages(
        app=seed_image(registry, layout_dir, "team/app", "v1", [2048, 32 * 1024]),
        multi=seed_image(registry, layout_dir, "team/multi", "v1", [4096], PLATFORMS),
        other=seed_image(registry, layout_dir, "team/other", "v1", [1024]),
        hello=seed_image(registry, layout_dir, "public/hello", "v1", [512]),
    )
