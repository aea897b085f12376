"""Driving the real skopeo: push OCI layouts to a test registry, inspect what is there.

Credentials go through a temporary 0600 auth file, never the command line.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tests.harness.process import HarnessError, require_tool

if TYPE_CHECKING:
    from tests.harness.images import BuiltImage

_TIMEOUT = 300


class RegistryLike(Protocol):
    """What skopeo needs to know about a registry."""

    @property
    def host(self) -> str: ...

    @property
    def ca_dir(self) -> Path: ...


@contextlib.contextmanager
def auth_file(
    host: str,
    username: str | None,
    password: str | None,
    *,
    identity_token: str | None = None,
) -> Iterator[Path | None]:
    """A 0600 docker auth file for `host`, deleted afterwards; None when anonymous.

    With `identity_token` Go clients use it as an OAuth2 refresh token (POST grant).
    """
    if username is None and identity_token is None:
        yield None
        return
    entry: dict[str, str] = {}
    if identity_token is not None:
        entry["identitytoken"] = identity_token
        username, password = username or "<token>", ""
    entry["auth"] = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
    with tempfile.TemporaryDirectory(prefix="pb-auth-") as tmp:
        path = Path(tmp) / "auth.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"auths": {host: entry}}, fh)
        yield path


def _env(tmp: str) -> dict[str, str]:
    # A private HOME/XDG dir keeps the machine's ~/.docker and containers config out of tests.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TZ")}
    env.update(HOME=tmp, XDG_RUNTIME_DIR=tmp, XDG_CONFIG_HOME=tmp)
    return env


def run_skopeo(args: list[str], *, what: str) -> subprocess.CompletedProcess[str]:
    """Run skopeo with an isolated environment; HarnessError with its stderr on failure."""
    skopeo = require_tool("skopeo")
    with tempfile.TemporaryDirectory(prefix="pb-skopeo-") as tmp:
        result = subprocess.run(
            [skopeo, "--insecure-policy", *args],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            env=_env(tmp),
            check=False,
        )
    if result.returncode != 0:
        raise HarnessError(f"skopeo {what} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def push(
    layout_dir: Path,
    src_tag: str,
    registry: RegistryLike,
    repository: str,
    dest_tag: str | None = None,
    *,
    username: str | None = None,
    password: str | None = None,
    all_platforms: bool = True,
) -> str:
    """`skopeo copy [--all] oci:LAYOUT:TAG docker://HOST/REPO:TAG`; returns the pushed digest."""
    dest = f"docker://{registry.host}/{repository}:{dest_tag or src_tag}"
    with (
        auth_file(registry.host, username, password) as auth,
        tempfile.TemporaryDirectory(prefix="pb-push-") as tmp,
    ):
        digest_file = Path(tmp) / "digest"
        args = ["copy", "--retry-times", "2", "--digestfile", str(digest_file)]
        args += ["--all"] if all_platforms else []
        args += ["--dest-cert-dir", str(registry.ca_dir)]
        args += ["--dest-authfile", str(auth)] if auth else ["--dest-no-creds"]
        run_skopeo([*args, f"oci:{layout_dir}:{src_tag}", dest], what=f"push to {dest}")
        return digest_file.read_text().strip()


def push_image(
    image: BuiltImage,
    registry: RegistryLike,
    repository: str,
    tag: str | None = None,
    *,
    username: str | None = None,
    password: str | None = None,
) -> str:
    """Push a BuiltImage (every platform); returns the digest the tag points at."""
    digest = push(
        image.layout_dir,
        image.tag,
        registry,
        repository,
        tag,
        username=username,
        password=password,
        all_platforms=True,
    )
    if digest != image.digest:
        raise HarnessError(f"pushed digest {digest} differs from built {image.digest}")
    return digest


def inspect_raw(
    registry: RegistryLike,
    repository: str,
    reference: str,
    *,
    username: str | None = None,
    password: str | None = None,
    identity_token: str | None = None,
) -> dict[str, Any]:
    """`skopeo inspect --raw`: the manifest or index JSON as the registry serves it."""
    sep = "@" if reference.startswith("sha256:") else ":"
    src = f"docker://{registry.host}/{repository}{sep}{reference}"
    with auth_file(registry.host, username, password, identity_token=identity_token) as auth:
        args = ["inspect", "--raw", "--cert-dir", str(registry.ca_dir)]
        args += ["--authfile", str(auth)] if auth else ["--no-creds"]
        result = run_skopeo([*args, src], what=f"inspect {src}")
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def pull_to_layout(
    registry: RegistryLike,
    repository: str,
    reference: str,
    layout_dir: Path,
    tag: str = "latest",
    *,
    username: str | None = None,
    password: str | None = None,
    all_platforms: bool = False,
) -> None:
    """`skopeo copy docker://... oci:DIR:TAG` (a reference pull to compare against)."""
    sep = "@" if reference.startswith("sha256:") else ":"
    src = f"docker://{registry.host}/{repository}{sep}{reference}"
    layout_dir.parent.mkdir(parents=True, exist_ok=True)
    with auth_file(registry.host, username, password) as auth:
        args = ["copy", "--src-cert-dir", str(registry.ca_dir)]
        args += ["--all"] if all_platforms else []
        args += ["--src-authfile", str(auth)] if auth else ["--src-no-creds"]
        run_skopeo([*args, src, f"oci:{layout_dir}:{tag}"], what=f"pull {src}")
