"""The harness's CRI client puts a pull's credential where the kubelet does: PullImage's
`AuthConfig` username and password (an in-process gRPC server records the request)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from tests.harness.cri import SERVICE, ImageServiceClient, PullAuth, messages
from tests.harness.runtimes import remove_tree, short_dir


@pytest.fixture
def recorded() -> Iterator[tuple[Path, list[Any]]]:
    """A fake ImageService on a unix socket answering PullImage; (socket, requests seen)."""
    seen: list[Any] = []
    m = messages()

    def pull(request: Any, context: grpc.ServicerContext) -> Message:
        seen.append(request)
        # Built from a run-time descriptor: mypy does not know its fields.
        reply: Callable[..., Message] = m["PullImageResponse"]
        return reply(image_ref="sha256:" + "0" * 64)

    handler = grpc.unary_unary_rpc_method_handler(
        pull,
        request_deserializer=m["PullImageRequest"].FromString,
        response_serializer=lambda reply: reply.SerializeToString(),
    )
    folder = short_dir("cri")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(SERVICE, {"PullImage": handler})]
    )
    server.add_insecure_port(f"unix://{folder / 'cri.sock'}")
    server.start()
    try:
        yield folder / "cri.sock", seen
    finally:
        server.stop(None)
        remove_tree(folder)


class TestPullAuth:
    def test_without_auth_no_auth_config(self, recorded: tuple[Path, list[Any]]) -> None:
        socket, seen = recorded
        with ImageServiceClient(socket, timeout=10) as client:
            client.pull("registry.test/team/app:v1")
        assert seen[0].image.image == "registry.test/team/app:v1"
        assert not seen[0].HasField("auth")

    def test_auth_is_username_and_password(self, recorded: tuple[Path, list[Any]]) -> None:
        socket, seen = recorded
        with ImageServiceClient(socket, timeout=10) as client:
            ref = client.pull("registry.test/team/app:v1", auth=PullAuth("alice", "s3cret"))
        assert ref == "sha256:" + "0" * 64
        auth = seen[0].auth
        assert (auth.username, auth.password, auth.auth, auth.server_address) == (
            "alice",
            "s3cret",
            "",
            "",
        )
        assert seen[0].sandbox_config.metadata.name == "cri-test"

    def test_password_not_in_repr(self) -> None:
        assert "s3cret" not in repr(PullAuth("alice", "s3cret"))
