"""Settings files into frozen dataclasses: YAML or TOML read, every key known, every value
checked against its field's declared type, credentials refused before they are used.

The broker's config (`broker.py`) names its sections and which keys must never hold a
value inline; this module knows nothing of the broker's settings themselves.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from pullbroker_service.config.errors import ConfigError

InlineRefusal = Callable[[str, str], str | None]
"""(prefix, key) -> why that key may not be written in the file, or None when it may."""


def read_file(path: Path) -> dict[str, Any]:
    """The mapping in a YAML file, or a TOML file (by its `.toml` suffix)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text) or {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except yaml.YAMLError:
        raise ConfigError(f"config file {path} is not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of settings")
    return data


def to_path(label: str, value: object, base: Path) -> Path:
    """A path setting; relative ones are relative to `base` (the file's folder)."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{label} must be a path")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


@dataclass(frozen=True)
class SettingsReader:
    """Builds section dataclasses from one source (`where`: a file's name, or "flags")."""

    where: str
    base: Path
    sections: Mapping[str, type]
    """Section dataclasses by class name: a field annotated with one is read as a mapping."""
    refuse_inline: InlineRefusal

    def build(self, cls: type, data: object, prefix: str) -> Any:
        """An instance of the section `cls` from the mapping `data` found at `prefix`."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{self.where}: {prefix.rstrip('.')} must be a mapping")
        self.check_keys(data, {f.name for f in fields(cls)}, prefix)
        return cls(**self.convert(cls, dict(data), prefix))

    def check_keys(self, data: Mapping[Any, Any], known: set[str], prefix: str) -> None:
        """Refuse inline credentials first, then keys the section does not have."""
        for key in data:
            refusal = self.refuse_inline(prefix, str(key))
            if refusal is not None:
                raise ConfigError(f"{self.where}: {refusal}")
            if key not in known:
                section = f" in {prefix.rstrip('.')}" if prefix else ""
                raise ConfigError(
                    f"{self.where}: unknown setting {prefix + str(key)!r}; known{section}: "
                    + ", ".join(sorted(known))
                )

    def convert(self, cls: type, data: dict[str, Any], prefix: str) -> dict[str, Any]:
        """Each value checked against its field's declared type (the annotation's text)."""
        types = {f.name: str(f.type) for f in fields(cls)}
        out: dict[str, Any] = {}
        for key, value in data.items():
            section = self.sections.get(types[key].removesuffix(" | None"))
            if section is not None:
                out[key] = None if value is None else self.build(section, value, f"{prefix}{key}.")
            else:
                out[key] = self.scalar(types[key], value, f"{self.where}: {prefix}{key}")
        return out

    def scalar(self, kind: str, value: object, label: str) -> object:
        """One value of the annotated `kind` (str, int, float, bool, Path; maybe `| None`)."""
        optional = kind.endswith(" | None")
        kind = kind.removesuffix(" | None")
        if value is None:
            if optional:
                return None
            raise ConfigError(f"{label} must be set (it cannot be empty)")
        if kind == "Path":
            return to_path(label, value, self.base)
        if kind == "bool":
            if not isinstance(value, bool):
                raise ConfigError(f"{label} must be true or false")
            return value
        if kind == "int":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{label} must be a non-negative integer")
            return value
        if kind == "float":
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ConfigError(f"{label} must be a non-negative number (not inf or nan)")
            return float(value)
        if not isinstance(value, str):
            raise ConfigError(f"{label} must be a string")
        return value
