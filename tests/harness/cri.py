"""A CRI `ImageService` client for tests: the calls the kubelet makes over the runtime socket.

crictl is not packaged here, so the tests speak CRI themselves. `cri_api.proto` beside this
file is a subset of kubernetes/cri-api `pkg/apis/runtime/v1/api.proto` (exact names and
field numbers, see its header). It is compiled when first used, by grpc_tools' protoc into a
descriptor set in a temp folder, and its messages are built from that descriptor, so no
generated code is committed and none can go stale. `ImageServiceClient` is the typed
surface: protobuf messages never leave this module.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from grpc_tools import protoc  # type: ignore[import-untyped]  # grpc_tools ships no types

from tests.harness.process import HarnessError

PROTO = Path(__file__).with_name("cri_api.proto")
SERVICE = "runtime.v1.ImageService"
_MESSAGES = (
    "ImageSpec",
    "AuthConfig",
    "PodSandboxMetadata",
    "PodSandboxConfig",
    "ImageFilter",
    "ListImagesRequest",
    "ListImagesResponse",
    "ImageStatusRequest",
    "ImageStatusResponse",
    "PullImageRequest",
    "PullImageResponse",
    "RemoveImageRequest",
    "RemoveImageResponse",
)


@functools.cache
def messages() -> dict[str, type[Message]]:
    """The message classes of `cri_api.proto`, by short name (compiled once per process)."""
    with tempfile.TemporaryDirectory(prefix="pb-cri-") as folder:
        out = Path(folder) / "cri_api.pb"
        argv = ["protoc", f"-I{PROTO.parent}", f"--descriptor_set_out={out}", PROTO.name]
        if protoc.main(argv) != 0:
            raise HarnessError(f"protoc could not compile {PROTO}")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"runtime.v1.{name}"))
        for name in _MESSAGES
    }


def _serialize(message: Message) -> bytes:
    # Not `Message.SerializeToString`: the base class method is abstract (upb classes).
    return message.SerializeToString()


@dataclass(frozen=True)
class CriImage:
    """An image as the runtime's CRI reports it (`runtime.v1.Image`)."""

    id: str  # the config digest: what PullImage returns as image_ref
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    size: int

    @classmethod
    def from_message(cls, image: Any) -> CriImage:
        return cls(image.id, tuple(image.repo_tags), tuple(image.repo_digests), int(image.size))


class CriCallError(Exception):
    """A CRI call the runtime answered with an error status."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{method}: {code.name}: {details}")
        self.code = code
        self.details = details


@dataclass(frozen=True)
class Pod:
    """The pod a pull is for: the kubelet sends its sandbox config with every PullImage."""

    name: str = "cri-test"
    namespace: str = "default"
    uid: str = "00000000-0000-4000-8000-000000000001"


@dataclass(frozen=True)
class PullAuth:
    """The registry credential PullImage carries in `AuthConfig`, as the kubelet sends the
    username and password of an imagePullSecret's docker config entry."""

    username: str
    password: str = field(repr=False)


class ImageServiceClient:
    """`runtime.v1.ImageService` over a runtime's unix socket, as the kubelet dials it."""

    def __init__(self, socket: Path, *, timeout: float = 120.0) -> None:
        self._channel = grpc.insecure_channel(f"unix://{socket}")
        self._timeout = timeout
        self._m = messages()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def pull(self, image: str, pod: Pod | None = None, *, auth: PullAuth | None = None) -> str:
        """PullImage; the image_ref. No `auth`: the node holds no registry credential (the
        kubelet without an imagePullSecret); with it, `AuthConfig` username and password."""
        pod = pod or Pod()
        metadata = self._new("PodSandboxMetadata", name=pod.name, namespace=pod.namespace,
                             uid=pod.uid)  # fmt: skip
        credential: dict[str, object] = {}
        if auth is not None:
            credential["auth"] = self._new(
                "AuthConfig", username=auth.username, password=auth.password
            )
        request = self._new(
            "PullImageRequest",
            image=self._spec(image),
            sandbox_config=self._new("PodSandboxConfig", metadata=metadata),
            **credential,
        )
        return str(self._call("PullImage", request).image_ref)

    def status(self, image: str) -> CriImage | None:
        """ImageStatus: the image, or None when the runtime does not have it."""
        answer = self._call("ImageStatus", self._new("ImageStatusRequest", image=self._spec(image)))
        return CriImage.from_message(answer.image) if answer.HasField("image") else None

    def list(self) -> list[CriImage]:
        """ListImages, unfiltered."""
        answer = self._call("ListImages", self._new("ListImagesRequest"))
        return [CriImage.from_message(image) for image in answer.images]

    def remove(self, image: str) -> None:
        """RemoveImage (the runtime answers OK for an image it does not have)."""
        self._call("RemoveImage", self._new("RemoveImageRequest", image=self._spec(image)))

    def _spec(self, image: str) -> Message:
        return self._new("ImageSpec", image=image)

    def _new(self, message: str, /, **fields: object) -> Message:
        # The classes come from a descriptor at run time: their fields are unknown to mypy.
        factory: Callable[..., Message] = self._m[message]
        return factory(**fields)

    def _call(self, method: str, request: Message) -> Any:
        reply = self._m[method + "Response"]
        call: Callable[..., Any] = self._channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=_serialize,
            response_deserializer=reply.FromString,
        )
        try:
            return call(request, timeout=self._timeout)
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Call):
                raise CriCallError(method, exc.code(), exc.details() or "") from None
            raise
