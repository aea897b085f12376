"""`pullbroker-sidecar pull-secret`: a kubernetes.io/dockerconfigjson Secret of short-lived logins.

    pullbroker-sidecar pull-secret --namespace NS --name NAME IMAGE... [--watch] [-o json]

For clusters that cannot install a kubelet credential provider. The Secret (YAML, or JSON
with `-o json`) goes to stdout, for `kubectl apply -f -`; nothing is written to disk. Each
image gets its own `auths` key, `host[:port]/repository` (kubelet matches keys by path
prefix, so the most specific key wins), holding the login the broker grants for it (see
daemon/login_cache.py for which registries have one). An image without a login fails the whole
command: a Secret that silently lacks an image would only fail later, at pod start.

A Secret is a file on the cluster's disks (etcd, backups), so a Basic pass-through login -
the registry's long-lived credential itself - is refused with a clear error: only
short-lived logins are written. An identity token (ACR's refresh token) is written as
`identitytoken` (what docker, podman and skopeo read) and as the password of the login's
username (what kubelet reads: its entries have no identitytoken, and ACR accepts the
refresh token as the password of 00000000-0000-0000-0000-000000000000).

`--watch` renders again when half of the shortest remaining life has passed and prints the
next document (`---` between YAML documents, one JSON object per line), until SIGTERM or
Ctrl-C; while the broker is away it retries with backoff and the last Secret stays valid.
Annotations carry the expiry so an operator can see how fresh a Secret is.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pullbroker_client.broker import AsyncBrokerClient, BrokerTarget
from pullbroker_client.home import Home

from pullbroker_sidecar.daemon.login_cache import Login, LoginCache, Logins, NoLogin
from pullbroker_sidecar.daemon.protocol import UNAVAILABLE
from pullbroker_sidecar.errors import InvalidOption, PassthroughRefused

NODE_ROLE = "node"
EXPIRES_ANNOTATION = "pullbroker.io/expires-at"
IMAGES_ANNOTATION = "pullbroker.io/images"
MANAGED_BY = {"app.kubernetes.io/managed-by": "pullbroker-sidecar"}
MIN_REFRESH = 5.0
MAX_BACKOFF = 30.0


def render_secret(namespace: str, name: str, logins: Sequence[Login]) -> dict[str, Any]:
    """The Secret object for `logins` (one `auths` entry per repository)."""
    auths: dict[str, dict[str, str]] = {}
    for login in logins:
        if login.passthrough:
            raise PassthroughRefused(_passthrough_refused(login))
        pair = f"{login.username}:{login.secret.reveal()}".encode()
        entry = {
            "username": login.username,
            "password": login.secret.reveal(),
            "auth": base64.b64encode(pair).decode(),
        }
        if login.identity_token:
            entry["identitytoken"] = login.secret.reveal()
        auths[f"{login.domain}/{login.repository}"] = entry
    config = json.dumps({"auths": auths}, separators=(",", ":")).encode()
    expires = min(login.expires_at for login in logins)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(MANAGED_BY),
            "annotations": {
                EXPIRES_ANNOTATION: dt.datetime.fromtimestamp(expires, dt.UTC).isoformat(),
                IMAGES_ANNOTATION: ",".join(sorted(auths)),
            },
        },
        "data": {".dockerconfigjson": base64.b64encode(config).decode()},
    }


def _passthrough_refused(login: Login) -> str:
    return (
        f"no pull secret for {login.domain}/{login.repository}: its registry allows only Basic "
        "pass-through, whose login is the registry's long-lived credential, and a Secret would "
        "put it on the cluster's disks; use the kubelet credential provider or "
        "`pullbroker-sidecar pull --dest containerd` on the node instead (they keep it in "
        "memory)"
    )


def format_secret(secret: dict[str, Any], output: str) -> str:
    """JSON (one line) for `-o json`, else a YAML document."""
    if output == "json":
        return json.dumps(secret, separators=(",", ":")) + "\n"
    return str(yaml.safe_dump(secret, sort_keys=False))


def refresh_delay(logins: Sequence[Login], now: float, cap: float | None = None) -> float:
    """Seconds until the next render: half the shortest remaining life (at least 5 s), or
    `cap` when that is sooner."""
    delay = max(MIN_REFRESH, min(login.remaining(now) for login in logins) / 2)
    return delay if cap is None else min(delay, cap)


def run_command(args: argparse.Namespace) -> int:
    """Render once (or keep rendering with --watch); the exit status."""
    if args.max_interval is not None and args.max_interval <= 0:
        raise InvalidOption("--max-interval must be a positive number of seconds")
    target = BrokerTarget.from_home(
        Home.resolve(args.home),
        NODE_ROLE,
        address=args.broker,
        ca=_path(args.ca),
        cert=_path(args.cert),
        key=_path(args.key),
    )
    return asyncio.run(_run(args, target))


async def _run(args: argparse.Namespace, target: BrokerTarget) -> int:
    stop = asyncio.Event()
    if args.watch:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    async with AsyncBrokerClient(target) as broker:
        logins = Logins(LoginCache(broker))
        backoff = 1.0
        while True:
            try:
                found = await _logins(logins, args.images)
            except NoLogin as exc:
                if not (args.watch and exc.code == UNAVAILABLE):
                    raise
                print(f"pullbroker-sidecar: {exc}; retrying", file=sys.stderr, flush=True)
                delay, backoff = backoff, min(backoff * 2, MAX_BACKOFF)
            else:
                secret = render_secret(args.namespace, args.name, found)
                if args.watch and args.output != "json":
                    sys.stdout.write("---\n")
                sys.stdout.write(format_secret(secret, args.output))
                sys.stdout.flush()
                delay, backoff = refresh_delay(found, time.time(), args.max_interval), 1.0
            if not args.watch:
                return 0
            try:
                await asyncio.wait_for(stop.wait(), delay)
                return 0
            except TimeoutError:
                logins.cache.clear()  # a fresh login each time: the broker mints past half-life


async def _logins(logins: Logins, images: Sequence[str]) -> list[Login]:
    found: list[Login] = []
    for image in images:
        try:
            login = await logins.for_image(image)
        except NoLogin as exc:
            raise NoLogin(exc.code, f"no pull secret for {image}: {exc}") from None
        if login.passthrough:
            raise PassthroughRefused(_passthrough_refused(login))
        found.append(login)
    return found


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None
