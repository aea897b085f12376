"""Reading a Compose file's images as `docker compose` does (interpolation, .env, dedupe)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pullbroker_sidecar.errors import InvalidOption
from pullbroker_sidecar.integrations.compose import (
    ComposeImage,
    dotenv,
    images_of,
    interpolate,
    read_compose,
)

ENV = {"SET": "v", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$SET", "v"),
        ("${SET}", "v"),
        ("${UNSET:-d}", "d"),
        ("${EMPTY:-d}", "d"),
        ("${EMPTY-d}", ""),
        ("${UNSET-d}", "d"),
        ("${SET:-d}", "v"),
        ("${SET:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        ("$$SET", "$SET"),
        ("a/${UNSET:-${SET}}:1", "a/v:1"),
        ("${UNSET:-x/${UNSET2:-y}}", "x/y"),
        ("reg/app:${SET}-${UNSET:-1}", "reg/app:v-1"),
    ],
)
def test_interpolation_follows_compose(text: str, expected: str) -> None:
    assert interpolate(text, ENV, "t") == expected


def test_unset_variable_is_empty_with_a_warning() -> None:
    warnings: list[str] = []
    assert interpolate("app:${NOPE}", ENV, "t", warnings) == "app:"
    assert warnings == ["NOPE"]


@pytest.mark.parametrize("text", ["${UNSET:?set it}", "${EMPTY:?}", "${UNSET?x}"])
def test_required_variable_missing_is_refused(text: str) -> None:
    with pytest.raises(InvalidOption, match="required variable"):
        interpolate(text, ENV, "t")


@pytest.mark.parametrize("text", ["${", "${1A}", "$-", "${SET%x}"])
def test_bad_syntax_is_refused(text: str) -> None:
    with pytest.raises(InvalidOption):
        interpolate(text, ENV, "t")


def test_images_skip_build_only_dedupe_and_keep_platform() -> None:
    document = {
        "services": {
            "a": {"image": "reg/app:1"},
            "b": {"image": "${IMG:-reg/app:1}"},
            "c": {"build": "."},
            "d": {"build": ".", "image": "reg/built:1"},
            "e": {"image": "reg/app:1", "platform": "linux/arm64"},
        }
    }
    found = images_of(document, {}, "f")
    assert found.images == [
        ComposeImage("reg/app:1", None, ("a", "b")),
        ComposeImage("reg/built:1", None, ("d",)),
        ComposeImage("reg/app:1", "linux/arm64", ("e",)),
    ]
    assert found.skipped == ["c"]


@pytest.mark.parametrize("document", [None, [], {"version": "3"}, {"services": {"a": "x"}}])
def test_not_a_compose_file(document: object) -> None:
    with pytest.raises(InvalidOption):
        images_of(document, {}, "f")


def test_dotenv_and_environment_precedence(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "# comment\nexport TAG='2.0'\nHOST=reg.example.com # trailing\nOVER=file\nbad line\n"
    )
    assert dotenv(tmp_path / ".env") == {"TAG": "2.0", "HOST": "reg.example.com", "OVER": "file"}
    compose = tmp_path / "compose.yaml"
    compose.write_text("services:\n  a:\n    image: ${HOST}/app:${TAG}-${OVER}\n")
    found = read_compose(compose, {"OVER": "env"})
    assert [i.image for i in found.images] == ["reg.example.com/app:2.0-env"]


def test_unreadable_or_not_yaml(tmp_path: Path) -> None:
    with pytest.raises(InvalidOption, match="cannot read"):
        read_compose(tmp_path / "missing.yaml", {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("services: [\n")
    with pytest.raises(InvalidOption, match="not YAML"):
        read_compose(bad, {})
