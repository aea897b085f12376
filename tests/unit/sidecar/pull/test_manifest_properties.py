"""Manifest, index and config parsing on arbitrary input: only the package's own errors escape."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pullbroker_client.registry.document import MAX_DEPTH, load_object
from pullbroker_client.registry.errors import RegistryProtocolError
from pullbroker_client.registry.mediatypes import OCI_MANIFEST
from pullbroker_client.registry.verify import manifest_media_type
from pullbroker_sidecar.errors import UnsupportedManifest
from pullbroker_sidecar.pull.manifest import (
    effective_media_type,
    parse_config,
    parse_image_manifest,
    parse_index,
)

HEX = "a" * 64
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_DESCRIPTORISH = st.fixed_dictionaries(
    {},
    optional={
        "mediaType": _SCALARS,
        "digest": st.sampled_from([f"sha256:{HEX}", "sha256:x", "md5:0", ""]) | _SCALARS,
        "size": st.integers(-2, 2**70) | _SCALARS,
        "platform": _SCALARS | st.dictionaries(st.text(max_size=12), _SCALARS, max_size=4),
        "annotations": _SCALARS | st.dictionaries(st.text(max_size=8), _SCALARS, max_size=3),
    },
)
_JSON: st.SearchStrategy[Any] = st.recursive(
    _SCALARS | _DESCRIPTORISH,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
_MANIFESTISH = st.fixed_dictionaries(
    {},
    optional={
        "schemaVersion": _SCALARS,
        "mediaType": st.sampled_from([OCI_MANIFEST, "x"]) | _SCALARS,
        "config": _DESCRIPTORISH | _JSON,
        "layers": st.lists(_DESCRIPTORISH, max_size=3) | _JSON,
        "manifests": st.lists(_DESCRIPTORISH, max_size=3) | _JSON,
    },
)


def _documents() -> st.SearchStrategy[bytes]:
    """Raw bytes, JSON of any shape, manifest-like objects, and nesting past the bound."""
    deep = st.integers(MAX_DEPTH - 2, 3000).map(lambda n: b'{"a":' + b"[" * n + b"]" * n + b"}")
    as_json = (_JSON | _MANIFESTISH).map(lambda v: json.dumps(v).encode())
    return st.binary(max_size=200) | as_json | deep


def _only_unsupported(parse: Any, data: bytes) -> None:
    """`parse(data)` returns, or raises UnsupportedManifest with a one-line message."""
    message = ""
    try:
        parse(data)
    except UnsupportedManifest as exc:
        message = str(exc)
    assert "\n" not in message


class TestOnlyOwnErrors:
    """Whatever the registry serves, parsing fails with the package's one error class."""

    @given(_documents())
    def test_image_manifest(self, data: bytes) -> None:
        """parse_image_manifest: a manifest or UnsupportedManifest, nothing else."""
        _only_unsupported(lambda d: parse_image_manifest(d, "i"), data)

    @given(_documents())
    def test_index(self, data: bytes) -> None:
        """parse_index: entries or UnsupportedManifest, nothing else."""
        _only_unsupported(lambda d: parse_index(d, "i"), data)

    @given(_documents(), st.sampled_from(["", OCI_MANIFEST, "application/json; x=y", "a/b"]))
    def test_media_type(self, data: bytes, declared: str) -> None:
        """effective_media_type: a type or UnsupportedManifest, nothing else."""
        _only_unsupported(lambda d: effective_media_type(declared, d, "i"), data)

    @given(_documents())
    def test_config(self, data: bytes) -> None:
        """parse_config: a platform (or None) or UnsupportedManifest, nothing else."""
        _only_unsupported(lambda d: parse_config(d, "i"), data)

    @given(_documents(), st.none() | st.text(max_size=30))
    def test_client_media_type_never_raises(self, data: bytes, content_type: str | None) -> None:
        """The client's manifest_media_type always answers with a string."""
        assert isinstance(manifest_media_type(content_type, data), str)

    @given(_documents())
    def test_load_object(self, data: bytes) -> None:
        """load_object: a dict nested at most MAX_DEPTH deep, or RegistryProtocolError."""
        with contextlib.suppress(RegistryProtocolError):
            assert isinstance(load_object(data, "doc"), dict)


class TestDepth:
    """The nesting bound is explicit, and the same however deep the caller's stack is."""

    def test_a_hundred_thousand_levels_is_one_line(self) -> None:
        """100k nested arrays: UnsupportedManifest saying so, not RecursionError."""
        data = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        with pytest.raises(UnsupportedManifest, match=f"nests deeper than {MAX_DEPTH} levels"):
            parse_config(data, "r/team/app:v1")

    @pytest.mark.parametrize(("depth", "ok"), [(MAX_DEPTH, True), (MAX_DEPTH + 1, False)])
    def test_the_bound_is_exact(self, depth: int, ok: bool) -> None:
        """MAX_DEPTH levels (the outer object counts) parse; one more does not."""
        inner = depth - 1
        data = b'{"a":' + b"[" * inner + b"]" * inner + b"}"
        if ok:
            assert load_object(data, "doc") == json.loads(data)
        else:
            with pytest.raises(RegistryProtocolError, match="nests deeper"):
                load_object(data, "doc")
