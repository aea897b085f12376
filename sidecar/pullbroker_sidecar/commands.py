"""The parsers of the sidecar's other subcommands, apart from their implementations.

`pullbroker-sidecar pull` is on the hot path of every node pull: the CLI imports the daemon
(structlog, cryptography), pull-secret and install modules only when one of those commands
runs, and registers their arguments from here.
"""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_ROTATION_CHECK = 5.0


def add_run_parser(
    commands: argparse._SubParsersAction[Any],
) -> argparse.ArgumentParser:
    """Register `run` (the caller adds the common connection options)."""
    run: argparse.ArgumentParser = commands.add_parser(
        "run",
        help="serve node helpers (docker credential helper, kubelet provider) on a socket",
        description="Hold the mTLS channel to the broker and answer the node's runtime "
        "helpers on a Unix socket (0600, this user only). Logins stay in memory.",
    )
    run.add_argument(
        "--socket",
        metavar="PATH",
        help="socket to serve (default: $PULLBROKER_SIDECAR_SOCKET, else HOME/sidecar.sock)",
    )
    run.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="REF",
        help="an image this node runs through the docker credential helper (repeatable): "
        "the helper is asked per registry, the broker decides per repository",
    )
    run.add_argument(
        "--images-file", metavar="FILE", help="more --image references, one per line (# comments)"
    )
    run.add_argument(
        "--rotation-check",
        type=float,
        default=DEFAULT_ROTATION_CHECK,
        metavar="SECONDS",
        help=f"how often to look for rotated certificate files (default {DEFAULT_ROTATION_CHECK})",
    )
    run.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics over plain HTTP at http://HOST:PORT/metrics "
        "(default: off; e.g. 127.0.0.1:9091, or 0.0.0.0:9091 in a DaemonSet pod)",
    )
    add_tracing_option(run)
    add_mirror_options(run)
    return run


def add_tracing_option(parser: argparse.ArgumentParser) -> None:
    """`--otlp-endpoint URL` (for `run` and `pull`)."""
    parser.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="send OpenTelemetry traces to this OTLP/HTTP collector, e.g. "
        "http://otel-collector:4318 (default: $OTEL_EXPORTER_OTLP_ENDPOINT, else off)",
    )


def add_mirror_options(run: argparse.ArgumentParser) -> None:
    """`run --mirror ...`: the node-local registry mirror."""
    mirror = run.add_argument_group("node-local registry mirror")
    mirror.add_argument(
        "--mirror",
        metavar="HOST:PORT",
        help="serve containerd/CRI-O/podman/Docker as a registry mirror on HOST:PORT "
        "(loopback), pulling upstream with broker tokens through the node store",
    )
    mirror.add_argument(
        "--mirror-allow-remote",
        action="store_true",
        help="allow a non-loopback --mirror address and serve remote clients",
    )
    mirror.add_argument(
        "--mirror-allow-uid",
        type=int,
        action="append",
        default=[],
        metavar="UID",
        help="a local user the mirror serves (repeatable; default: root only)",
    )
    mirror.add_argument(
        "--mirror-serve-stale",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="serve a tag's last manifest this long while its registry is unreachable (default 0)",
    )
    mirror.add_argument(
        "--mirror-store",
        metavar="DIR",
        help="the node content store the mirror fills (default HOME/store; a writable "
        "folder when the home is read-only, e.g. /var/lib/pullbroker/store)",
    )
    mirror.add_argument(
        "--store-max-size",
        default="20GiB",
        metavar="SIZE",
        help="node store size kept by the mirror, least recently used removed (default 20GiB)",
    )


def add_pull_secret_parser(
    commands: argparse._SubParsersAction[Any],
) -> argparse.ArgumentParser:
    """Register `pull-secret` (the caller adds the common connection options)."""
    secret: argparse.ArgumentParser = commands.add_parser(
        "pull-secret",
        help="render a kubernetes.io/dockerconfigjson Secret of short-lived logins",
        description="Print a Secret for imagePullSecrets holding only short-lived logins "
        "from the broker (YAML; JSON with -o json). Pipe it to `kubectl apply -f -`.",
    )
    secret.add_argument("images", nargs="+", metavar="IMAGE", help="images the Secret serves")
    secret.add_argument("--namespace", "-n", required=True, help="the Secret's namespace")
    secret.add_argument("--name", required=True, help="the Secret's name")
    secret.add_argument(
        "--watch", action="store_true", help="print a fresh Secret before each one expires"
    )
    secret.add_argument(
        "--max-interval",
        type=float,
        metavar="SECONDS",
        help="with --watch: render at least this often (default: at half the shortest life)",
    )
    return secret


def add_install_parser(commands: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    """Register `install-helpers`."""
    install: argparse.ArgumentParser = commands.add_parser(
        "install-helpers",
        help="write the docker credential helper and kubelet provider as standalone files",
        description="Write docker-credential-pullbroker and pullbroker-credential-provider "
        "into DIR as self-contained python3 zipapps (standard library only).",
    )
    install.add_argument("dir", metavar="DIR", help="e.g. /usr/local/bin or kubelet's bin dir")
    return install


def add_mirror_config_parser(commands: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    """Register `mirror-config`."""
    config: argparse.ArgumentParser = commands.add_parser(
        "mirror-config",
        help="point containerd, CRI-O/podman or dockerd at the node-local mirror",
        description="Write containerd hosts.toml files or a registries.conf drop-in (or print "
        "dockerd's registry-mirrors) so the runtime pulls through `run --mirror`.",
    )
    config.add_argument(
        "--runtime", required=True, choices=("containerd", "crio", "podman", "docker")
    )
    config.add_argument("--mirror", metavar="HOST:PORT", help="the mirror (default 127.0.0.1:5005)")
    config.add_argument(
        "--hosts-dir", metavar="DIR", help="containerd: e.g. /etc/containerd/certs.d"
    )
    config.add_argument(
        "--registries-conf",
        metavar="FILE",
        help="crio/podman: the drop-in to write "
        "(default /etc/containers/registries.conf.d/50-pullbroker-mirror.conf)",
    )
    config.add_argument(
        "--host", action="append", default=[], metavar="H", help="a registry host (repeatable)"
    )
    config.add_argument(
        "--image", action="append", default=[], metavar="REF", help="an image whose host to add"
    )
    config.add_argument("--images-file", metavar="FILE", help="more images, one per line")
    config.add_argument(
        "--no-broker",
        action="store_true",
        help="configure only the registries named here, without asking the broker which "
        "ones this node may pull from",
    )
    return config
