"""`pullbroker registry add | list | get | test | rotate | delete`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import grpc
from pullbroker.v1 import registry_pb2

from pullbroker_client.broker import BrokerCallError, BrokerClient
from pullbroker_client.cli import output
from pullbroker_client.cli.common import UsageError, client_for, wants_json
from pullbroker_client.cli.parser import EXIT_FAILURE, add_common_options
from pullbroker_client.cli.password import read_password
from pullbroker_client.errors import ConfigurationError
from pullbroker_client.secret import Secret

TYPES: dict[str, int] = {
    "generic": registry_pb2.REGISTRY_TYPE_GENERIC,
    "public": registry_pb2.REGISTRY_TYPE_PUBLIC,
    "docker_hub": registry_pb2.REGISTRY_TYPE_DOCKER_HUB,
    "ghcr": registry_pb2.REGISTRY_TYPE_GHCR,
    "quay": registry_pb2.REGISTRY_TYPE_QUAY,
    "harbor": registry_pb2.REGISTRY_TYPE_HARBOR,
    "ecr": registry_pb2.REGISTRY_TYPE_ECR,
    "gcr": registry_pb2.REGISTRY_TYPE_GCR,
    "gar": registry_pb2.REGISTRY_TYPE_GAR,
    "acr": registry_pb2.REGISTRY_TYPE_ACR,
}
_GOOGLE = (registry_pb2.REGISTRY_TYPE_GCR, registry_pb2.REGISTRY_TYPE_GAR)


def registry_type(text: str) -> int:
    """argparse type for --type: one of TYPES (case and '-' vs '_' do not matter)."""
    key = text.strip().lower().replace("-", "_")
    if key not in TYPES:
        raise argparse.ArgumentTypeError(
            f"unknown registry type {text!r}: choose one of {', '.join(TYPES)}"
        )
    return TYPES[key]


def add_registry_commands(subparsers: Any) -> None:
    """Attach `registry ...` to the top-level subparsers."""
    registry = subparsers.add_parser("registry", help="manage registry credentials (admin)")
    commands = registry.add_subparsers(dest="registry_command", metavar="COMMAND", required=True)

    add = commands.add_parser("add", help="register a registry and its credential")
    add.add_argument("--name", required=True, help="display name, e.g. team-ghcr")
    add.add_argument(
        "--type", required=True, type=registry_type, metavar="TYPE", help=", ".join(TYPES)
    )
    add.add_argument("--url", required=True, help="registry URL, e.g. https://ghcr.io")
    add.add_argument("--username", help="username (ECR: access key id)")
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password (token, secret key, key JSON) from stdin",
    )
    add.add_argument("--registry-ca", metavar="PEM_FILE", help="CA bundle of the registry's TLS")
    add.add_argument("--test", action="store_true", help="test the credential before saving")
    add.set_defaults(func=cmd_add)

    commands.add_parser("list", help="list registries").set_defaults(func=cmd_list)
    for name, func, text in (
        ("get", cmd_get, "show one registry"),
        ("test", cmd_test, "test a saved registry's credential against the registry"),
        ("rotate", cmd_rotate, "replace a registry's credential"),
        ("delete", cmd_delete, "delete a registry and its credential"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("id", metavar="ID", help="id, registries/<id> or display name")
        command.set_defaults(func=func)
        if name == "rotate":
            command.add_argument("--password-stdin", action="store_true", help="read from stdin")
            command.add_argument("--username", help="new username (default: keep the current one)")
    for command in commands.choices.values():
        add_common_options(command)


def cmd_add(args: argparse.Namespace) -> int:
    credential = _new_credential(args.type, args.username, args.password_stdin, args.url)
    registry = registry_pb2.Registry(
        display_name=args.name,
        type=args.type,
        url=args.url,
        registry_ca_pem=_read_ca(args.registry_ca) if args.registry_ca else "",
    )
    with client_for(args) as client:
        created = client.create_registry(registry, credential, test=args.test)
    _show_registry(args, created)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        registries = list(client.iter_registries())
    if wants_json(args):
        print(output.dumps({"registries": [output.to_dict(r) for r in registries]}))
    else:
        print(output.registry_table(registries))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        _show_registry(args, resolve(client, args.id))
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        registry = resolve(client, args.id)
        result = client.test_connection(name=registry.name)
    if wants_json(args):
        print(output.dumps({"name": registry.name, **output.to_dict(result)}))
    else:
        print(output.test_result_text(registry.display_name, result))
    return 0 if result.outcome == registry_pb2.CONNECTION_OUTCOME_OK else EXIT_FAILURE


def cmd_rotate(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        current = resolve(client, args.id)
        username = args.username or current.username
        credential = _new_credential(current.type, username, args.password_stdin, current.url)
        if credential is None:
            raise UsageError(f"{current.display_name} is a public registry: it has no credential")
        target = registry_pb2.Registry(name=current.name, etag=current.etag)
        updated = client.update_registry(target, (), credential)
    if wants_json(args):
        print(output.dumps(output.to_dict(updated)))
    else:
        print(f"rotated {updated.display_name}: credential version {updated.credential_version}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        registry = resolve(client, args.id)
        client.delete_registry(registry.name, registry.etag)
    if wants_json(args):
        print(output.dumps({"deleted": registry.name, "display_name": registry.display_name}))
    else:
        print(f"deleted {registry.display_name} ({registry.name})")
    return 0


def resolve(client: BrokerClient, ident: str) -> Any:
    """The registry named by `ident`: registries/<id>, a display name, or a bare id."""
    if ident.startswith("registries/"):
        return client.get_registry(ident)
    try:
        return client.get_registry(ident)
    except BrokerCallError as exc:
        if exc.code not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            raise
    try:
        return client.get_registry(f"registries/{ident}")
    except BrokerCallError as exc:
        if exc.code is not grpc.StatusCode.NOT_FOUND:
            raise
        raise BrokerCallError(
            exc.code,
            f"no registry has the id or display name {ident!r}: see `pullbroker registry list`",
            request_id=exc.request_id,
        ) from None


def _new_credential(kind: int, username: str | None, stdin: bool, url: str) -> Any | None:
    if kind == registry_pb2.REGISTRY_TYPE_PUBLIC:
        if username or stdin:
            raise UsageError(
                "a public registry takes no credential: drop --username/--password-stdin"
            )
        return None
    if kind in _GOOGLE:
        key = read_password(from_stdin=stdin, prompt="Service-account key JSON: ")
        return registry_pb2.Credential(
            google=registry_pb2.GoogleServiceAccount(key_json=key.reveal())
        )
    if not username:
        what = "the access key id" if kind == registry_pb2.REGISTRY_TYPE_ECR else "the username"
        raise UsageError(f"--username is required: give {what} for this registry")
    password = read_password(from_stdin=stdin, prompt=f"Password for {username} at {url}: ")
    if kind == registry_pb2.REGISTRY_TYPE_ECR:
        aws = registry_pb2.AwsCredential(
            access_key_id=username, secret_access_key=password.reveal()
        )
        return registry_pb2.Credential(aws=aws)
    return _basic(username, password)


def _basic(username: str, password: Secret) -> Any:
    basic = registry_pb2.BasicCredential(username=username, password=password.reveal())
    return registry_pb2.Credential(basic=basic)


def _read_ca(path: str) -> str:
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(
            f"--registry-ca {path} does not exist: give the CA's PEM file"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read --registry-ca {path}: {exc}") from None


def _show_registry(args: argparse.Namespace, registry: Any) -> None:
    if wants_json(args):
        print(output.dumps(output.to_dict(registry)))
    else:
        print(output.registry_details(registry))
