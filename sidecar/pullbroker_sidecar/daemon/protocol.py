"""The daemon's socket protocol: one JSON object per line each way, then the socket closes.

    request   {"v": 1, "op": OP, ...}
    answer    {"ok": true, ...}  or  {"ok": false, "error": CODE, "message": TEXT}

    OP            request fields      answer fields (ok)
    ping          -                   pid, version
    status        -                   broker, certificate, cached, served, refused, rebuilds
    login         host                registry_host, username, secret, expires_at,
                                      identity_token, passthrough, repository_scoped
    image_login   image               the same, plus repository and key (`host/repo`)
                  [service_account_token]  the pod's, from the kubelet: the broker decides for
                                      that pod; such answers are never cached by the daemon
    registries    -                   registries: {host: username}

    identity_token: secret is an OAuth2 refresh token (docker's `identitytoken`), not a
    password; passthrough: secret is the registry's long-lived credential (never write it
    to a file); repository_scoped: the registry limits the login to the repository.

    CODE          meaning
    not_found     no credential for that registry or image here (runtimes go anonymous)
    denied        the broker's policy does not let this node pull it
    no_login      the registry has no login for runtimes (bearer tokens only): the message
                  says how to pull instead
    unavailable   the broker cannot be reached (the daemon retried with backoff)
    bad_request   the request is malformed
    internal      the daemon failed to answer (its log says why); retrying may help

The socket is the only way in: mode 0600, and the daemon also checks the peer's uid
(SO_PEERCRED), so only its own user (or root) is answered. This module is what the
helpers import, so it uses the standard library alone: helper start-up is on the path of
every `docker pull` and kubelet image pull.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from typing import Any

from pullbroker_client.jsonlimits import loads_bounded

from pullbroker_sidecar.errors import DaemonUnavailable

VERSION = 1
SOCKET_ENV = "PULLBROKER_SIDECAR_SOCKET"
SOCKET_NAME = "sidecar.sock"
SYSTEM_SOCKET = "/run/pullbroker/sidecar.sock"
# The same as pullbroker_client.home (HOME_ENV, DEFAULT_HOME); repeated so helpers need not
# import it (a unit test keeps them equal).
HOME_ENV = "PULLBROKER_HOME"
DEFAULT_HOME = "~/.pullbroker"
MAX_LINE = 64 * 1024
# Frames are two levels deep ({"registries": {host: user}}); more is a confused or hostile peer.
MAX_DEPTH = 8
DEFAULT_TIMEOUT = 30.0
# sockaddr_un.sun_path is 108 bytes on Linux, one of which is the terminating NUL.
MAX_SOCKET_PATH = 107

# The Username that tells docker, podman and skopeo that Secret is an identity (OAuth2
# refresh) token (docker-credential-helpers' convention).
IDENTITY_TOKEN_USERNAME = "<token>"  # noqa: S105 - a protocol marker, not a secret

NOT_FOUND = "not_found"
DENIED = "denied"
NO_LOGIN = "no_login"
UNAVAILABLE = "unavailable"
BAD_REQUEST = "bad_request"
INTERNAL = "internal"


def default_socket(
    home: str | None = None,
    environ: Mapping[str, str] | None = None,
    system: str = SYSTEM_SOCKET,
) -> str:
    """Where the daemon listens, resolved alike by the daemon and its helpers:

    $PULLBROKER_SIDECAR_SOCKET; else `<home>/sidecar.sock` for an explicit home (--home or
    $PULLBROKER_HOME); else the system daemon's socket (/run/pullbroker/sidecar.sock, see
    deploy/systemd) when it exists; else ~/.pullbroker/sidecar.sock.
    """
    env = os.environ if environ is None else environ
    explicit = env.get(SOCKET_ENV)
    if explicit:
        return explicit
    root = home or env.get(HOME_ENV)
    if not root and os.path.exists(system):
        return system
    return os.path.join(os.path.abspath(os.path.expanduser(root or DEFAULT_HOME)), SOCKET_NAME)


def encode(message: Mapping[str, Any]) -> bytes:
    """One protocol line."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """A protocol line as a JSON object; ValueError (only) when it is not one."""
    document = loads_bounded(line, MAX_DEPTH)
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    return document


def ask(path: str, request: Mapping[str, Any], timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """Send one request to the daemon at `path` and return its answer.

    DaemonUnavailable says what to do when nobody answers (not running, wrong path, not
    our socket).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(encode({"v": VERSION, **request}))
        data = _read_line(sock)
    except FileNotFoundError:
        raise DaemonUnavailable(
            f"no pullbroker sidecar socket at {path}: start `pullbroker-sidecar run` "
            f"(or set {SOCKET_ENV})"
        ) from None
    except PermissionError:
        raise DaemonUnavailable(
            f"not allowed to use the pullbroker sidecar socket {path}: it answers its own "
            "user (and root) only"
        ) from None
    except TimeoutError:
        raise DaemonUnavailable(
            f"the pullbroker sidecar at {path} did not answer in {timeout:.0f} s"
        ) from None
    except OSError as exc:
        raise DaemonUnavailable(
            f"cannot talk to the pullbroker sidecar at {path} ({exc.strerror or exc}): "
            "is `pullbroker-sidecar run` running?"
        ) from None
    finally:
        sock.close()
    try:
        return decode(data)
    except ValueError:
        raise DaemonUnavailable(
            f"the pullbroker sidecar at {path} sent a malformed answer"
        ) from None


def _read_line(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = sock.recv(8192)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if chunk.endswith(b"\n") or total > MAX_LINE:
            break
    return b"".join(chunks)
