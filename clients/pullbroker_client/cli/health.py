"""`pullbroker health [--service NAME]`: the broker's grpc.health.v1 status, over mTLS.

For exec probes (Kubernetes' own gRPC probe speaks plaintext, which the broker refuses) and
for operators. Exit 0 when SERVING, 1 otherwise, 2 on usage errors. Any certificate the
broker's CA signed will do: health is served to every authenticated caller.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pullbroker_client.broker import BrokerTarget
from pullbroker_client.cli.common import home_of, wants_json
from pullbroker_client.cli.output import dumps
from pullbroker_client.cli.parser import EXIT_FAILURE, add_common_options

SERVING = health_pb2.HealthCheckResponse.SERVING


def add_health_command(subparsers: Any) -> None:
    health = subparsers.add_parser("health", help="is the broker serving? (exit 0 if so)")
    health.add_argument(
        "--service",
        default="",
        help='service to ask about, e.g. pullbroker.v1.PullService (default: "" = overall)',
    )
    health.add_argument("--role", default="admin", help="which home certificate to use")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    add_common_options(health)
    health.set_defaults(func=cmd_health)


def cmd_health(args: argparse.Namespace) -> int:
    target = BrokerTarget.from_home(
        home_of(args),
        args.role,
        address=args.broker,
        ca=_path(args.ca),
        cert=_path(args.cert),
        key=_path(args.key),
    )
    request = health_pb2.HealthCheckRequest(service=args.service)
    with target.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            status = stub.Check(request, timeout=args.timeout).status
            name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        except grpc.RpcError as exc:
            status, name = None, _failure(exc.code(), args.service)
    label = args.service or "(overall)"
    if wants_json(args):
        print(dumps({"address": target.address, "service": args.service, "status": name}))
    else:
        print(f"{target.address} {label}: {name}")
    return 0 if status == SERVING else EXIT_FAILURE


# What the broker reports on (grpc.health.v1 service names); "" is the broker as a whole.
KNOWN_SERVICES = (
    "",
    "pullbroker.v1.RegistryService",
    "pullbroker.v1.PullService",
    "pullbroker.secrets",
    "pullbroker.store",
)


def _failure(code: grpc.StatusCode, service: str) -> str:
    """The status to print when Check failed: the broker answered NOT_FOUND for a service it
    does not report on, which is not the broker being unreachable."""
    if code is grpc.StatusCode.NOT_FOUND:
        known = ", ".join(s or '""' for s in KNOWN_SERVICES)
        return f"UNKNOWN_SERVICE (the broker reports on {known}; pick one with --service)"
    return f"unreachable ({code.name})"


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None
