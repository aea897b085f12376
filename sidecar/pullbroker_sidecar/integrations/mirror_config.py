"""`pullbroker-sidecar mirror-config`: point a runtime at the node-local mirror.

    mirror-config --runtime containerd --hosts-dir DIR [--mirror HOST:PORT] [--host H ...]
        writes DIR/<host>/hosts.toml for each registry host: the registry as `server`, the
        mirror as a `pull, resolve` host (containerd adds `?ns=<host>` to each request);
        other hosts' folders are left alone. containerd reads DIR when its CRI plugin has
        `config_path = "DIR"` (`[plugins."io.containerd.grpc.v1.cri".registry]`); ctr
        with `--hosts-dir DIR`; containerd 2.1+ also needs `use_local_image_pull = true`.
    mirror-config --runtime crio|podman --registries-conf FILE ...
        writes a registries.conf drop-in: for each host a `[[registry]]` whose mirror is
        `HOST:PORT/<host>` (the mirror reads the registry from the path's first part;
        `registry.local:5000` is written `registry.local_5000`: no `:` may appear there).
    mirror-config --runtime docker
        prints the daemon.json `registry-mirrors` entry (dockerd mirrors Docker Hub only).

Hosts are every registry the node's policy may pull from, as the broker lists them
(ListPullableRegistries, over the node's mTLS identity: --home, --broker, --ca/--cert/--key
as for `run`), plus any named with `--host` or by the images of `--image`/`--images-file`.
`--no-broker` writes only the named ones (a node without a broker yet). Every file is
written atomically (a temp file in the same folder, then a rename), so a runtime never
reads half of one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path

from pullbroker_client.broker import AsyncBrokerClient, BrokerTarget
from pullbroker_client.errors import ClientError
from pullbroker_client.home import Home
from pullbroker_client.registry.reference import DOCKER_HUB, parse_reference

from pullbroker_sidecar.daemon.run import images_from
from pullbroker_sidecar.errors import InvalidOption
from pullbroker_sidecar.mirror.routes import path_prefix

DEFAULT_MIRROR = "127.0.0.1:5005"
DEFAULT_DROP_IN = "/etc/containers/registries.conf.d/50-pullbroker-mirror.conf"
DOCKER_HUB_SERVER = "https://registry-1.docker.io"


def hosts_from(args: argparse.Namespace) -> list[str]:
    """Registry hosts named by --host, --image and --images-file, sorted, once each."""
    hosts: set[str] = set()
    for name in [*args.host, *(f"{image}" for image in images_from(args))]:
        probe = name if "/" in name else f"{name}/probe"
        try:
            hosts.add(parse_reference(probe).domain)
        except ClientError as exc:
            raise InvalidOption(f"{name!r} is not a registry host or image: {exc}") from None
    return sorted(hosts)


def containerd_hosts_toml(host: str, mirror: str) -> str:
    """The hosts.toml that sends `host`'s pulls through the mirror first."""
    server = DOCKER_HUB_SERVER if host == DOCKER_HUB else f"https://{host}"
    return (
        "# Written by pullbroker-sidecar mirror-config: pulls go through the node-local mirror,\n"
        "# which authenticates upstream with short-lived broker tokens.\n"
        f"server = {json.dumps(server)}\n\n"
        f"[host.{json.dumps('http://' + mirror)}]\n"
        '  capabilities = ["pull", "resolve"]\n'
    )


def registries_conf(hosts: list[str], mirror: str) -> str:
    """A registries.conf drop-in mirroring every host through the mirror's path prefix."""
    parts = ["# Written by pullbroker-sidecar mirror-config (node-local mirror).\n"]
    for host in hosts:
        parts.append(
            f"\n[[registry]]\nlocation = {json.dumps(host)}\n\n"
            f"[[registry.mirror]]\nlocation = {json.dumps(f'{mirror}/{path_prefix(host)}')}\n"
            "insecure = true\n"
        )
    return "".join(parts)


def docker_daemon_json(mirror: str) -> str:
    """The daemon.json fragment for dockerd (Docker Hub only)."""
    return json.dumps({"registry-mirrors": [f"http://{mirror}"]})


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename (0644: runtimes read it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".pullbroker-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


async def pullable_hosts(args: argparse.Namespace) -> list[str]:
    """The registry hosts the broker says this node's policy may pull from."""
    target = BrokerTarget.from_home(
        Home.resolve(args.home),
        "node",
        address=args.broker,
        ca=_path(args.ca),
        cert=_path(args.cert),
        key=_path(args.key),
    )
    async with AsyncBrokerClient(target) as broker:
        listed = await broker.list_pullable_registries()
    return sorted({registry.host for registry in listed.registries})


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def run_command(args: argparse.Namespace) -> int:
    """Write (or print) the runtime's mirror configuration; the exit status."""
    mirror = args.mirror or DEFAULT_MIRROR
    if args.runtime == "docker":
        print(docker_daemon_json(mirror))
        return 0
    hosts = hosts_from(args)
    if not args.no_broker:
        hosts = sorted(set(hosts) | set(asyncio.run(pullable_hosts(args))))
    if not hosts:
        raise InvalidOption(
            "no registry to configure: the broker lists none this node may pull from; name "
            "one with --host, --image or --images-file"
        )
    if args.runtime == "containerd":
        if not args.hosts_dir:
            raise InvalidOption(
                "--runtime containerd needs --hosts-dir (e.g. /etc/containerd/certs.d)"
            )
        for host in hosts:
            write_atomically(
                Path(args.hosts_dir) / host / "hosts.toml", containerd_hosts_toml(host, mirror)
            )
        print(f"wrote hosts.toml for {len(hosts)} registries under {args.hosts_dir}")
        return 0
    target = Path(args.registries_conf or DEFAULT_DROP_IN)
    write_atomically(target, registries_conf(hosts, mirror))
    print(f"wrote {target} for {len(hosts)} registries")
    return 0
