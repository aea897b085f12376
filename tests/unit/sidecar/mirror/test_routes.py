"""Which registry, repository and object a mirror request names."""

from __future__ import annotations

import pytest
from pullbroker_sidecar.errors import MirrorRefusal
from pullbroker_sidecar.mirror.routes import path_prefix, route

DIGEST = "sha256:" + "a" * 64


class TestUpstreamHost:
    """containerd's ns, a registries.conf path prefix, else Docker Hub."""

    def test_containerd_ns(self) -> None:
        """?ns names the registry; the whole path is the repository."""
        found = route("/v2/team/app/manifests/v1", "ghcr.io")
        assert (found.kind, found.host, found.repository, found.reference) == (
            "manifest", "ghcr.io", "team/app", "v1",
        )  # fmt: skip

    def test_path_prefix(self) -> None:
        """A first part with a dot is the registry (registries.conf mirrors)."""
        found = route(f"/v2/quay.io/org/app/blobs/{DIGEST}", None)
        assert (found.kind, found.host, found.repository) == ("blob", "quay.io", "org/app")

    def test_path_prefix_with_port(self) -> None:
        """host_port in the prefix is host:port (containers/image refuses ':' there)."""
        assert path_prefix("127.0.0.1:5000") == "127.0.0.1_5000"
        found = route("/v2/127.0.0.1_5000/team/app/manifests/v1", None)
        assert found.host == "127.0.0.1:5000"
        assert found.repository == "team/app"

    def test_docker_hub_without_ns_or_prefix(self) -> None:
        """dockerd's registry-mirrors: Docker Hub, official images under library/."""
        found = route("/v2/nginx/manifests/latest", None)
        assert (found.host, found.repository, found.image) == (
            "docker.io", "library/nginx", "docker.io/library/nginx",
        )  # fmt: skip

    def test_base(self) -> None:
        """/v2/ is the version check."""
        assert route("/v2/", None).kind == "base"


class TestRefusedPaths:
    """Paths that are not objects, or that could escape the store, are refused."""

    @pytest.mark.parametrize(
        ("path", "status"),
        [
            ("/v2/team/app/tags/list", 404),
            ("/v2/team/app/blobs/sha256:../../etc", 404),
            ("/v2/team/app/blobs/v1", 400),
            ("/v2/../x/manifests/v1", 400),
            ("/v2/Team/App/manifests/v1", 400),
        ],
    )
    def test_refused(self, path: str, status: int) -> None:
        """Each answers with an OCI error, never a route."""
        with pytest.raises(MirrorRefusal) as caught:
            route(path, None)
        assert caught.value.status == status

    def test_by_digest(self) -> None:
        """A digest reference is content-addressed; a tag is not."""
        assert route(f"/v2/a/b/manifests/{DIGEST}", "h.io").by_digest
        assert not route("/v2/a/b/manifests/v1", "h.io").by_digest
