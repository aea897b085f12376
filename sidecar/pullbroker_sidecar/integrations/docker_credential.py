"""`docker-credential-pullbroker`: the docker-credential-helpers protocol, served by the daemon.

    docker-credential-pullbroker get      stdin: a server URL or host (`https://r.example`,
                                          `127.0.0.1:5000`, `https://index.docker.io/v1/`),
                                          with or without a trailing newline
                                          stdout: {"ServerURL","Username","Secret"}
    docker-credential-pullbroker list     stdout: {"<host>": "<username>", ...} ({} if none)
    docker-credential-pullbroker store    refused (exit 1): credentials live in the broker
    docker-credential-pullbroker erase    refused (exit 1), for the same reason
    docker-credential-pullbroker version

Configure it per registry: `{"credHelpers": {"r.example": "pullbroker"}}` in
`~/.docker/config.json` (or $DOCKER_CONFIG), and in podman's/skopeo's `--authfile`.

What `get` returns, and why. The helper is asked per *registry*, and docker, podman and
skopeo then run the registry's token flow themselves, per repository, against the realm
the registry names: they never present a token they were handed. So the answer must be a
credential that realm accepts (a "login"), not one of the broker's repository-scoped
bearer tokens. The daemon (see daemon/login_cache.py) hands out the login the broker grants
(IssueRegistryLogin) for an image this node declared for that registry: ECR's short-lived
token, GCR/GAR's `oauth2accesstoken` + access token, ACR's refresh token, or audited Basic
pass-through. A refresh token (an identity token) is answered as `Username: "<token>"` with
the token as Secret, which makes docker, podman and skopeo use it as an OAuth2 refresh
token against the realm (docker-credential-helpers' convention for identity tokens). For a
registry without a login the answer is "credentials not found" (plus the reason and what
to run instead on stderr), so runtimes fall back to anonymous, and the image is pulled with
`pullbroker-sidecar pull`, which uses the repository-scoped token itself: `--dest
docker-daemon` for Docker, `--dest docker-archive:FILE` then `podman load -i FILE` for
podman (skopeo reads the archive too).

"credentials not found in native keychain" on stdout with exit 1 is the protocol's way to
say "none": docker, podman and skopeo then go anonymous. Anything else that fails (no
daemon) is a hard error with a message saying what to do.

Start-up matters (this runs on every pull): only the standard library and the daemon's
socket protocol are imported, and the answer comes from the daemon's memory.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

from pullbroker_sidecar.daemon.protocol import IDENTITY_TOKEN_USERNAME, ask, default_socket
from pullbroker_sidecar.errors import DaemonUnavailable

NOT_FOUND_MESSAGE = "credentials not found in native keychain"
VERSION = "pullbroker 0.1.0"
_MANAGED = (
    "pullbroker manages registry credentials in the broker; they are never stored on this "
    "node, so `{verb}` is not supported here (register credentials with `pullbroker registry`)"
)


def main(
    argv: list[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None
) -> int:
    """Entry point; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    source = sys.stdin if stdin is None else stdin
    out = sys.stdout if stdout is None else stdout
    action = args[0] if len(args) == 1 else ""
    if action == "get":
        return _get(source.read(4096), out)
    if action == "list":
        return _list(out)
    if action in ("store", "erase"):
        source.read(65536)  # the protocol sends a payload: take it, keep none of it
        out.write(_MANAGED.format(verb="docker login" if action == "store" else "docker logout"))
        out.write("\n")
        return 1
    if action == "version":
        out.write(VERSION + "\n")
        return 0
    out.write("usage: docker-credential-pullbroker get|list|store|erase|version\n")
    return 1


def _get(server_url: str, out: TextIO) -> int:
    server = server_url.strip()
    if not server:
        out.write("no server URL on stdin\n")
        return 1
    try:
        answer = ask(default_socket(), {"op": "login", "host": server})
    except DaemonUnavailable as exc:
        out.write(f"{exc}\n")
        return 1
    if not answer.get("ok"):
        print(f"pullbroker: {answer.get('message', 'no credential')}", file=sys.stderr)
        out.write(NOT_FOUND_MESSAGE + "\n")
        return 1
    username = IDENTITY_TOKEN_USERNAME if answer.get("identity_token") else answer.get("username")
    document = {
        "ServerURL": server,
        "Username": username or "",
        "Secret": answer.get("secret", ""),
    }
    out.write(json.dumps(document) + "\n")
    return 0


def _list(out: TextIO) -> int:
    try:
        answer = ask(default_socket(), {"op": "registries"})
    except DaemonUnavailable:
        answer = {}
    registries = answer.get("registries") if answer.get("ok") else None
    out.write(json.dumps(registries if isinstance(registries, dict) else {}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
