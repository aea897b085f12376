"""The images a Compose file runs, for `pullbroker-sidecar pull --compose FILE`.

Compose hosts pull through dockerd, which cannot use a repository-scoped token: the sidecar
pre-pulls every service's image instead. Read as `docker compose` reads it: `services.*.image`
after interpolation (`$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`,
`${VAR?err}`, `${VAR:+alt}`, `${VAR+alt}`, `$$` for a dollar; nested in defaults), from the
environment and then the `.env` file beside the Compose file (the environment wins). A service
with `build:` and no `image:` is built, not pulled; a service's `platform:` is honoured.
Services naming the same image (and platform) give one pull.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pullbroker_sidecar.errors import InvalidOption

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_FILE = 4 << 20
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


@dataclass(frozen=True)
class ComposeImage:
    """One image to pull, and the services that run it."""

    image: str
    platform: str | None
    services: tuple[str, ...]


@dataclass
class ComposeFile:
    """What a Compose file asks to pull."""

    images: list[ComposeImage]
    skipped: list[str] = field(default_factory=list)
    """Services with `build:` and no `image:` (or neither): nothing to pull."""
    warnings: list[str] = field(default_factory=list)
    """Variables used but not set (Compose substitutes an empty string and warns)."""


def read_compose(path: Path, environ: Mapping[str, str] | None = None) -> ComposeFile:
    """The images `path` runs; InvalidOption when it cannot be read as a Compose file."""
    try:
        with path.open("rb") as fh:
            text = fh.read(_MAX_FILE + 1)
    except OSError as exc:
        raise InvalidOption(f"cannot read --compose {path}: {exc.strerror or exc}") from None
    if len(text) > _MAX_FILE:
        raise InvalidOption(f"--compose {path} is over {_MAX_FILE >> 20} MiB")
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidOption(f"--compose {path} is not YAML: {exc}") from None
    variables = {**dotenv(path.parent / ".env"), **(os.environ if environ is None else environ)}
    return images_of(document, variables, str(path))


def images_of(document: Any, variables: Mapping[str, str], where: str) -> ComposeFile:
    """The images of a parsed Compose document, in service order, deduplicated."""
    if not isinstance(document, dict) or not isinstance(document.get("services"), dict):
        raise InvalidOption(f"{where} has no `services:` mapping: not a Compose file")
    result = ComposeFile(images=[])
    found: dict[tuple[str, str | None], list[str]] = {}
    for service, spec in document["services"].items():
        if not isinstance(spec, dict):
            raise InvalidOption(f"{where}: service {service!r} is not a mapping")
        image = spec.get("image")
        if image is None:
            result.skipped.append(str(service))
            continue
        if not isinstance(image, str):
            raise InvalidOption(f"{where}: the image of service {service!r} is not a string")
        context = f"{where}: service {service}"
        name = interpolate(image, variables, context, result.warnings).strip()
        platform = spec.get("platform")
        if platform is not None:
            platform = interpolate(str(platform), variables, context, result.warnings) or None
        found.setdefault((name, platform), []).append(str(service))
    for (name, platform), services in found.items():
        result.images.append(ComposeImage(name, platform, tuple(services)))
    return result


def interpolate(
    text: str, variables: Mapping[str, str], context: str, warnings: list[str] | None = None
) -> str:
    """`text` with Compose's variable syntax substituted from `variables`."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$":
            out.append(char)
            i += 1
            continue
        following = text[i + 1 : i + 2]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "{":
            end = _closing_brace(text, i + 2, context)
            out.append(_braced(text[i + 2 : end], variables, context, warnings))
            i = end + 1
        else:
            match = _NAME.match(text, i + 1)
            if match is None:
                raise InvalidOption(f"{context}: invalid interpolation in {text!r}")
            out.append(_lookup(match.group(), variables, warnings))
            i = match.end()
    return "".join(out)


def _closing_brace(text: str, start: int, context: str) -> int:
    depth = 1
    for j in range(start, len(text)):
        if text[j] == "{" and text[j - 1] == "$":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    raise InvalidOption(f"{context}: unclosed ${{ in {text!r}")


def _braced(
    body: str, variables: Mapping[str, str], context: str, warnings: list[str] | None
) -> str:
    match = _NAME.match(body)
    if match is None:
        raise InvalidOption(f"{context}: invalid interpolation ${{{body}}}")
    name, rest = match.group(), body[match.end() :]
    if not rest:
        return _lookup(name, variables, warnings)
    operator = next((op for op in _OPERATORS if rest.startswith(op)), None)
    if operator is None:
        raise InvalidOption(f"{context}: invalid interpolation ${{{body}}}")
    argument = rest[len(operator) :]
    value = variables.get(name)
    present = value is not None and (value != "" or not operator.startswith(":"))
    if operator in (":-", "-"):
        return (
            value
            if present and value is not None
            else interpolate(argument, variables, context, warnings)
        )
    if operator in (":+", "+"):
        return interpolate(argument, variables, context, warnings) if present else ""
    if not present or value is None:  # ":?" and "?"
        reason = interpolate(argument, variables, context, warnings) or f"{name} is not set"
        raise InvalidOption(f"{context}: required variable {name} is missing a value: {reason}")
    return value


def _lookup(name: str, variables: Mapping[str, str], warnings: list[str] | None) -> str:
    value = variables.get(name)
    if value is None:
        if warnings is not None and name not in warnings:
            warnings.append(name)
        return ""
    return value


def dotenv(path: Path) -> dict[str, str]:
    """`KEY=VALUE` lines of a `.env` file (`#` comments, `export `, quotes); {} if absent."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except OSError as exc:
        raise InvalidOption(f"cannot read {path}: {exc.strerror or exc}") from None
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _NAME.fullmatch(key):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values
