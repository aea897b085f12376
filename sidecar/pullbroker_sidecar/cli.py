"""`pullbroker-sidecar`: the node agent's command line.

    pullbroker-sidecar pull (IMAGE | --compose FILE) --dest DEST [--platform OS/ARCH[/VARIANT]]
        [--registry NAME] [--concurrency N] [--store DIR | --no-store] [--quiet]
        [--max-blob-size SIZE] [--max-image-size SIZE]      (default 10GiB, 20GiB)
        [--otlp-endpoint URL]                               (traces; default off)
        DEST: oci:DIR | docker-archive:FILE | docker-daemon[:SOCKET] | containerd[:NAMESPACE]
        --compose FILE: every service's image (one line each; exit 1 if any failed)
        docker-daemon also tags the image REPO:sha256-<hex>: dockerd cannot resolve
        REPO@sha256:<hex> for a loaded image, so run that tag instead (IMAGE may name it)
    pullbroker-sidecar run [--socket PATH] [--image REF ...]        (the node daemon)
    pullbroker-sidecar pull-secret --namespace NS --name NAME IMAGE... [--watch]
    pullbroker-sidecar install-helpers DIR      (standalone helpers for the host)
    pullbroker-sidecar mirror-config --runtime containerd|crio|podman|docker ...
    common: [--output table|json] [--home DIR] [--broker HOST:PORT] [--ca/--cert/--key PEM]

The node certificate (`tls/node.crt|key` in the home folder) proves who this node is; the
broker answers with a short-lived token for that one repository, which lives in memory
only. Blobs go through the node store (`HOME/store`, shared by every pull, interrupted
downloads resumed); an `oci:` layout is its own store unless `--store` is given. Progress
goes to stderr (redrawn on a terminal, plain lines otherwise); the result to stdout. A
failure is one line on stderr and exit status 1 (2 for usage, 130 when interrupted).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pullbroker_client import tracing
from pullbroker_client.broker import AsyncBrokerClient, BrokerTarget
from pullbroker_client.cli.parser import EXIT_FAILURE, Parser, add_common_options
from pullbroker_client.cli_flags import as_flags
from pullbroker_client.errors import ClientError
from pullbroker_client.home import Home
from pullbroker_client.registry.reference import parse_reference

from pullbroker_sidecar.commands import (
    add_install_parser,
    add_mirror_config_parser,
    add_pull_secret_parser,
    add_run_parser,
    add_tracing_option,
)
from pullbroker_sidecar.errors import SidecarError
from pullbroker_sidecar.pull.destinations import (
    DEST_FORMS,
    NO_REPO_DIGESTS,
    Destination,
    DockerArchiveDestination,
    DockerDaemonDestination,
    OciDestination,
    parse_destination,
    pinned_names,
    unpinned,
)
from pullbroker_sidecar.pull.download import DEFAULT_CONCURRENCY
from pullbroker_sidecar.pull.engine import PullEngine, PullResult
from pullbroker_sidecar.pull.limits import (
    BLOB_FLAG,
    DEFAULT_MAX_BLOB,
    DEFAULT_MAX_IMAGE,
    IMAGE_FLAG,
    PullLimits,
    format_size,
    parse_size,
)
from pullbroker_sidecar.pull.platform import Platform
from pullbroker_sidecar.pull.progress import progress_for
from pullbroker_sidecar.report import pull_reported

PROG = "pullbroker-sidecar"
SERVICE_NAME = "pullbroker-sidecar"
"""`service.name` of the sidecar's spans unless $OTEL_SERVICE_NAME says otherwise."""
EXPORT_TIMEOUT = 1.0
"""Seconds a traced pull may wait for the collector as it exits: a collector that is down
must not make every pull on the node seconds slower (its spans are dropped instead)."""
NODE_ROLE = "node"
EXIT_INTERRUPTED = 130
MAX_CONCURRENCY = 16
_T = TypeVar("_T")


def build_parser() -> Parser:
    """The argument parser (exposed for --help tests and docs)."""
    parser = Parser(prog=PROG, description="pullbroker node agent")
    add_common_options(parser, top_level=True)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    pull = commands.add_parser(
        "pull",
        help="pull an image with a short-lived token from the broker",
        description="Pull IMAGE into an OCI layout, a docker-archive file, dockerd or "
        "containerd. Every blob is verified against its digest before it is stored.",
    )
    add_common_options(pull)
    pull.add_argument(
        "image",
        metavar="IMAGE",
        nargs="?",
        help="e.g. registry.example.com/team/app:1.2 (REPO:sha256-<hex> pulls that digest)",
    )
    pull.add_argument(
        "--compose",
        metavar="FILE",
        help="pull every service's image of this Compose file (`services.*.image`, with "
        "${VAR:-default} from the environment and .env; `build:`-only services skipped)",
    )
    pull.add_argument("--dest", required=True, metavar="DEST", help=f"where to: {DEST_FORMS}")
    pull.add_argument(
        "--platform",
        metavar="OS/ARCH[/VARIANT]",
        help="which manifest of a multi-platform image (default: this host, linux/<arch>)",
    )
    pull.add_argument(
        "--registry", metavar="NAME", help="broker registry record, when several serve the host"
    )
    pull.add_argument(
        "--deployment",
        metavar="NAME",
        help="report this deployment's status to the broker (DEPLOYING, DEPLOYED or FAILED)",
    )
    pull.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"blobs downloaded at once (1-{MAX_CONCURRENCY}, default {DEFAULT_CONCURRENCY})",
    )
    pull.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    pull.add_argument(
        BLOB_FLAG,
        type=_size,
        default=DEFAULT_MAX_BLOB,
        metavar="SIZE",
        help="refuse an image with a larger layer or config, before downloading "
        f"(e.g. 500MiB, 50GiB; default {format_size(DEFAULT_MAX_BLOB)})",
    )
    pull.add_argument(
        IMAGE_FLAG,
        type=_size,
        default=DEFAULT_MAX_IMAGE,
        metavar="SIZE",
        help="refuse a larger image (config and layers), before downloading "
        f"(default {format_size(DEFAULT_MAX_IMAGE)})",
    )
    store = pull.add_mutually_exclusive_group()
    store.add_argument(
        "--store",
        metavar="DIR",
        help="node content store: shared blobs, resumable downloads (default HOME/store; "
        "an oci: layout is its own store unless this is given)",
    )
    store.add_argument(
        "--no-store", action="store_true", help="oci: only - download straight into the layout"
    )
    add_tracing_option(pull)
    for add in (add_run_parser, add_pull_secret_parser, add_mirror_config_parser):
        add_common_options(add(commands))
    add_install_parser(commands)
    return parser


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# Imported only when their command runs (see commands.py).
_OTHER_COMMANDS = {
    "run": "pullbroker_sidecar.daemon.run",
    "pull-secret": "pullbroker_sidecar.integrations.pull_secret",
    "install-helpers": "pullbroker_sidecar.integrations.install",
    "mirror-config": "pullbroker_sidecar.integrations.mirror_config",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in _OTHER_COMMANDS:
        module = importlib.import_module(_OTHER_COMMANDS[args.command])
        return _other(module.run_command, args, args.command)
    if (args.image is None) == (args.compose is None):
        parser.error("pull takes IMAGE or --compose FILE (one of them)")
    if args.compose is not None:
        return _compose(parser, args)
    args.image = unpinned(args.image)
    store: Path | None = None
    try:
        dest = parse_destination(args.dest)
        store = _store(args, dest)
        platform = Platform.parse(args.platform) if args.platform else None
        if not 1 <= args.concurrency <= MAX_CONCURRENCY:
            parser.error(f"--concurrency must be between 1 and {MAX_CONCURRENCY}")
        result = _traced(parser, args, lambda: asyncio.run(_pull(args, dest, platform, store)))
    except (SidecarError, ClientError) as exc:
        return _fail(f"pull of {args.image} failed: {exc}")
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        return _fail(f"pull of {args.image} failed: cannot write{where}: {exc.strerror}")
    except KeyboardInterrupt:
        if store is None:
            return _fail(
                f"pull of {args.image} interrupted; nothing partial was kept", EXIT_INTERRUPTED
            )
        return _fail(
            f"pull of {args.image} interrupted; the destination is untouched and {store} keeps "
            "the bytes downloaded so far for the next pull",
            EXIT_INTERRUPTED,
        )
    _print_result(result, args.output, pinned=isinstance(dest, DockerDaemonDestination))
    return 0


def _compose(parser: Parser, args: argparse.Namespace) -> int:
    """`pull --compose FILE`: every image, each tried; one line each; 1 if any failed."""
    from pullbroker_sidecar.integrations.compose import read_compose

    if args.deployment:
        parser.error("--deployment reports one image: it cannot be used with --compose")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        parser.error(f"--concurrency must be between 1 and {MAX_CONCURRENCY}")
    try:
        dest = parse_destination(args.dest)
        if isinstance(dest, DockerArchiveDestination):
            parser.error("--compose pulls several images: one docker-archive file cannot hold them")
        compose = read_compose(Path(args.compose).expanduser())
        store = _store(args, dest)
        default = Platform.parse(args.platform) if args.platform else None
    except (SidecarError, ClientError) as exc:
        return _fail(f"pull --compose {args.compose} failed: {exc}")
    for name in compose.warnings:
        print(f"{PROG}: warning: {name} is not set; using an empty string", file=sys.stderr)
    if compose.skipped:
        skipped = ", ".join(compose.skipped)
        print(f"{PROG}: services built, not pulled (no image:): {skipped}", file=sys.stderr)
    pinned = isinstance(dest, DockerDaemonDestination)

    async def pull_all() -> int:
        failed = 0
        async with AsyncBrokerClient(_target(args)) as broker:
            for item in compose.images:
                try:
                    platform = Platform.parse(item.platform) if item.platform else default
                    engine = _engine(args, broker, store)
                    result = await engine.pull(unpinned(item.image), dest, platform=platform)
                except (SidecarError, ClientError) as exc:
                    reason = str(exc)
                except OSError as exc:
                    reason = f"cannot write {exc.filename or ''}: {exc.strerror}"
                else:
                    _print_result(result, args.output, pinned=pinned, services=item.services)
                    continue
                failed += 1
                _compose_failure(args.output, item.image, item.services, reason)
        return failed

    try:
        failed = _traced(parser, args, lambda: asyncio.run(pull_all()))
    except (SidecarError, ClientError) as exc:
        return _fail(f"pull --compose {args.compose} failed: {exc}")
    except KeyboardInterrupt:
        return _fail(f"pull --compose {args.compose} interrupted", EXIT_INTERRUPTED)
    if failed:
        return _fail(f"{failed} of {len(compose.images)} images of {args.compose} failed")
    return 0


def _compose_failure(output: str, image: str, services: tuple[str, ...], reason: str) -> None:
    if output == "json":
        print(json.dumps({"image": image, "services": list(services), "error": as_flags(reason)}))
    else:
        print(f"{PROG}: error: pull of {image} failed: {as_flags(reason)}", file=sys.stderr)


def _traced(parser: Parser, args: argparse.Namespace, work: Callable[[], _T]) -> _T:
    """`work()` with tracing on when --otlp-endpoint or $OTEL_EXPORTER_OTLP_ENDPOINT says so;
    its spans are flushed before the command exits."""
    try:
        traced = tracing.start(args.otlp_endpoint, SERVICE_NAME, export_timeout=EXPORT_TIMEOUT)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        return work()
    finally:
        if traced is not None:
            traced.shutdown()


def _other(
    command: Callable[[argparse.Namespace], int], args: argparse.Namespace, name: str
) -> int:
    try:
        return command(args)
    except (SidecarError, ClientError) as exc:
        return _fail(f"{name} failed: {exc}")
    except OSError as exc:
        return _fail(f"{name} failed: {exc.strerror or exc}")
    except KeyboardInterrupt:
        return _fail(f"{name} interrupted", EXIT_INTERRUPTED)


def _target(args: argparse.Namespace) -> BrokerTarget:
    return BrokerTarget.from_home(
        Home.resolve(args.home),
        NODE_ROLE,
        address=args.broker,
        ca=_path(args.ca),
        cert=_path(args.cert),
        key=_path(args.key),
    )


def _engine(args: argparse.Namespace, broker: AsyncBrokerClient, store: Path | None) -> PullEngine:
    return PullEngine(
        broker,
        registry=args.registry,
        concurrency=args.concurrency,
        progress=progress_for(sys.stderr, quiet=args.quiet),
        store=store,
        limits=PullLimits(max_blob=args.max_blob_size, max_image=args.max_image_size),
    )


async def _pull(
    args: argparse.Namespace, dest: Destination, platform: Platform | None, store: Path | None
) -> PullResult:
    async with AsyncBrokerClient(_target(args)) as broker:
        engine = _engine(args, broker, store)
        if args.deployment:
            return await pull_reported(
                broker,
                args.deployment,
                lambda: engine.pull(args.image, dest, platform=platform),
                lambda result: result.digest,
            )
        return await engine.pull(args.image, dest, platform=platform)


def _store(args: argparse.Namespace, dest: Destination) -> Path | None:
    """--store, else HOME/store; an `oci:` layout is its own store unless --store is given."""
    if args.no_store or (args.store is None and isinstance(dest, OciDestination)):
        return None
    return _path(args.store) or Home.resolve(args.home).root / "store"


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def _print_result(
    result: PullResult, output: str, *, pinned: bool = False, services: tuple[str, ...] = ()
) -> None:
    names = pinned_names(parse_reference(result.image), result.digest) if pinned else ()
    if "@" in result.image and names:
        print(
            f"{PROG}: note: run {names[-1]}, not {result.image}: {NO_REPO_DIGESTS}",
            file=sys.stderr,
        )
    if output == "json":
        document: dict[str, Any] = result.to_json()
        if pinned:
            document["pinned"] = list(names)
        if services:
            document["services"] = list(services)
        print(json.dumps(document))
        return
    platform = f"{result.platform}, " if result.platform else ""
    line = (
        f"pulled {result.image} ({platform}{result.layers} layers, "
        f"{result.bytes / 1048576:.1f} MiB) into {result.name or result.dest} as {result.digest}"
    )
    if names:
        line += f"; pinned as {', '.join(names)}"
    if services:
        line += f" (services: {', '.join(services)})"
    print(line)


def _fail(message: str, status: int = EXIT_FAILURE) -> int:
    print(f"{PROG}: error: {as_flags(message)}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
