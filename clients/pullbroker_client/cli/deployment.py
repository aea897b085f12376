"""`pullbroker deployment create | list | get | watch | terminate`."""

from __future__ import annotations

import argparse
from typing import Any, cast

from pullbroker.v1 import deployment_pb2, registry_pb2

from pullbroker_client.cli import output
from pullbroker_client.cli.common import UsageError, client_for, wants_json
from pullbroker_client.cli.parser import EXIT_FAILURE, add_common_options

# The credential prompt and CA reading are the registry commands' own: one behaviour for both.
from pullbroker_client.cli.registry import (
    _new_credential,
    _read_ca,
    registry_type,
)

_TARGETS = ("kubernetes", "swarm", "compose", "nitro_enclave")


def add_deployment_commands(subparsers: Any) -> None:
    """Attach `deployment ...` to the top-level subparsers."""
    deployment = subparsers.add_parser("deployment", help="track deployments (admin)")
    commands = deployment.add_subparsers(
        dest="deployment_command", metavar="COMMAND", required=True
    )
    create = commands.add_parser("create", help="create a deployment of an image")
    create.add_argument("id", metavar="NAME", help="deployment id, e.g. web")
    create.add_argument("--image", required=True, help="e.g. ghcr.io/acme/app:1.2")
    create.add_argument("--registry", help="the registry whose credential pulls it")
    where = create.add_mutually_exclusive_group(required=True)
    where.add_argument("--kubernetes", metavar="NAMESPACE/WORKLOAD", help="Kubernetes workload")
    where.add_argument("--swarm", metavar="SERVICE", help="Docker Swarm service")
    where.add_argument("--compose", metavar="PROJECT", help="Docker Compose project")
    where.add_argument("--nitro-enclave", metavar="NAME", help="AWS Nitro Enclave")
    inline = create.add_argument_group("a credential for this deployment alone (enclaves)")
    inline.add_argument("--inline-url", metavar="URL", help="registry URL of the credential")
    inline.add_argument("--inline-type", type=registry_type, metavar="TYPE", help="registry type")
    inline.add_argument("--username", help="username (ECR: access key id)")
    inline.add_argument("--password-stdin", action="store_true", help="read the secret on stdin")
    inline.add_argument("--registry-ca", metavar="PEM_FILE", help="CA bundle of the registry")
    create.set_defaults(func=cmd_create)

    listing = commands.add_parser("list", help="list deployments")
    listing.add_argument("--registry", default="", help="only those using this registry")
    listing.add_argument("--all", action="store_true", help="include terminated deployments")
    listing.set_defaults(func=cmd_list)
    for name, func, text in (
        ("get", cmd_get, "show one deployment"),
        ("watch", cmd_watch, "print the deployment on every change"),
        ("terminate", cmd_terminate, "end a deployment (an inline credential is deleted)"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("id", metavar="NAME", help="deployment id or deployments/<id>")
        command.set_defaults(func=func)
    commands.choices["watch"].add_argument(
        "--until-settled",
        action="store_true",
        help="stop at DEPLOYED (exit 0) or FAILED (exit 1) instead of at termination",
    )
    for command in commands.choices.values():
        add_common_options(command)


def cmd_create(args: argparse.Namespace) -> int:
    inline, credential = _inline(args)
    if (inline is None) == (not args.registry):
        raise UsageError("give --registry, or --inline-url and --inline-type (not both)")
    deployment = deployment_pb2.Deployment(
        image=args.image, registry=args.registry or "", target=_target(args)
    )
    with client_for(args) as client:
        created = client.create_deployment(args.id, deployment, inline, credential)
    _show(args, created)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    found: list[Any] = []
    with client_for(args) as client:
        token = ""
        while True:
            page = client.list_deployments(
                0, token, registry=args.registry, show_terminated=args.all
            )
            found.extend(page.deployments)
            token = page.next_page_token
            if not token:
                break
    if wants_json(args):
        print(output.dumps({"deployments": [output.to_dict(d) for d in found]}))
    else:
        print(deployment_table(found))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        _show(args, client.get_deployment(args.id))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        for deployment in client.watch_deployment(args.id):
            if wants_json(args):
                print(output.dumps(output.to_dict(deployment)), flush=True)
            else:
                print(status_line(deployment), flush=True)
            if args.until_settled and deployment.state == deployment_pb2.DEPLOYMENT_STATE_FAILED:
                return EXIT_FAILURE
            if args.until_settled and deployment.state == deployment_pb2.DEPLOYMENT_STATE_DEPLOYED:
                return 0
    return 0


def cmd_terminate(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        ended = client.terminate_deployment(args.id)
    if wants_json(args):
        print(output.dumps(output.to_dict(ended)))
    else:
        gone = " and its inline credential" if ended.inline_credential else ""
        print(f"terminated {ended.name}{gone}")
    return 0


def state_label(value: int) -> str:
    name: str = deployment_pb2.DeploymentState.Name(cast(Any, value))
    return name.removeprefix("DEPLOYMENT_STATE_")


def category_label(value: int) -> str:
    name: str = deployment_pb2.FailureCategory.Name(cast(Any, value))
    return name.removeprefix("FAILURE_CATEGORY_").lower()


def target_label(target: Any) -> str:
    """ "kubernetes:prod/web", "swarm:api", ... (the form policy `targets` match)."""
    which = target.WhichOneof("kind")
    if which == "kubernetes":
        return f"kubernetes:{target.kubernetes.namespace}/{target.kubernetes.workload}"
    if which == "swarm":
        return f"swarm:{target.swarm.service}"
    if which == "compose":
        return f"compose:{target.compose.project}"
    if which == "nitro_enclave":
        return f"nitro_enclave:{target.nitro_enclave.name}"
    return ""


def status_line(deployment: Any) -> str:
    """One line: name, state, then the digest or the failure and what to check."""
    line = f"{deployment.name}: {state_label(deployment.state)}"
    if deployment.state == deployment_pb2.DEPLOYMENT_STATE_FAILED:
        line += f" ({category_label(deployment.failure_category)}) {deployment.message}"
    elif deployment.digest:
        line += f" {deployment.digest}"
    return line


def deployment_table(deployments: list[Any]) -> str:
    if not deployments:
        return "no deployments: create one with `pullbroker deployment create`"
    header = ("NAME", "STATE", "TARGET", "IMAGE", "REGISTRY", "DIGEST")
    rows = [header] + [
        (
            d.name.removeprefix("deployments/"),
            state_label(d.state),
            target_label(d.target),
            d.image,
            d.registry + (" (inline)" if d.inline_credential else ""),
            d.digest[:19],
        )
        for d in deployments
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def deployment_details(d: Any) -> str:
    rows = [
        ("name", d.name),
        ("state", state_label(d.state)),
        ("failure", category_label(d.failure_category) if d.failure_category else ""),
        ("message", d.message),
        ("image", d.image),
        ("digest", d.digest),
        ("target", target_label(d.target)),
        ("registry", d.registry),
        ("inline credential", "yes" if d.inline_credential else ""),
        ("creator", d.creator),
        ("reported by", d.reported_by),
        ("etag", d.etag),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in rows if v != "")


def _show(args: argparse.Namespace, deployment: Any) -> None:
    if wants_json(args):
        print(output.dumps(output.to_dict(deployment)))
    else:
        print(deployment_details(deployment))


def _target(args: argparse.Namespace) -> Any:
    target = deployment_pb2.DeploymentTarget()
    if args.kubernetes:
        namespace, slash, workload = args.kubernetes.partition("/")
        if not slash:
            raise UsageError("--kubernetes takes NAMESPACE/WORKLOAD, e.g. prod/web")
        target.kubernetes.namespace, target.kubernetes.workload = namespace, workload
    elif args.swarm:
        target.swarm.service = args.swarm
    elif args.compose:
        target.compose.project = args.compose
    else:
        target.nitro_enclave.name = args.nitro_enclave
    return target


def _inline(args: argparse.Namespace) -> tuple[Any | None, Any | None]:
    if not args.inline_url and args.inline_type is None:
        if args.username or args.password_stdin or args.registry_ca:
            raise UsageError("--username/--password-stdin/--registry-ca go with --inline-url")
        return None, None
    if not args.inline_url or args.inline_type is None:
        raise UsageError("an inline credential needs both --inline-url and --inline-type")
    registry = registry_pb2.Registry(
        type=args.inline_type,
        url=args.inline_url,
        registry_ca_pem=_read_ca(args.registry_ca) if args.registry_ca else "",
    )
    credential = _new_credential(
        args.inline_type, args.username, args.password_stdin, args.inline_url
    )
    if credential is None:
        raise UsageError("a public registry has no credential to give inline: use --registry")
    return registry, credential
