"""`pullbroker registry add | list | get | test | rotate | rollback | delete | kinds`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from pullbroker.v1 import registry_pb2

from pullbroker_client.broker import BrokerCallError, BrokerClient
from pullbroker_client.cli import output
from pullbroker_client.cli.common import UsageError, client_for, wants_json
from pullbroker_client.cli.kinds import cmd_kinds
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
    add.add_argument(
        "--url",
        default="",
        help="registry URL, e.g. https://ghcr.io (optional for kinds with a default host)",
    )
    add.add_argument("--username", help="username (ECR: the access key id)")
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the secret (password, token, secret access key, client secret) from stdin",
    )
    add.add_argument("--registry-ca", metavar="PEM_FILE", help="CA bundle of the registry's TLS")
    add.add_argument("--region", default="", help="region (ecr, gar), e.g. europe-west4")
    add.add_argument("--role-arn", default="", help="ecr: role to assume for each pull")
    add.add_argument(
        "--service-account-key",
        metavar="JSON_FILE",
        help="gcr/gar: the service-account key file (else the key JSON is read from stdin)",
    )
    add.add_argument("--tenant-id", default="", help="acr: Azure AD tenant of the principal")
    add.add_argument("--client-id", default="", help="acr: the service principal's client id")
    add.add_argument(
        "--allow-basic-passthrough",
        action="store_true",
        help="Basic-only registries: hand nodes the stored credential itself (audited)",
    )
    add.add_argument("--test", action="store_true", help="test the credential before saving")
    _repositories_option(add)
    add.set_defaults(func=cmd_add)
    update = commands.add_parser("update", help="change a registry's repository globs")
    update.add_argument("id", metavar="ID", help="id, registries/<id> or display name")
    _repositories_option(update, required=True)
    update.set_defaults(func=cmd_update)

    commands.add_parser("list", help="list registries").set_defaults(func=cmd_list)
    for name, func, text in (
        ("get", cmd_get, "show one registry"),
        ("test", cmd_test, "test a saved registry's credential against the registry"),
        ("rotate", cmd_rotate, "replace a registry's credential (tested first)"),
        ("rollback", cmd_rollback, "go back to the credential the last rotation replaced"),
        ("delete", cmd_delete, "delete a registry and its credential"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("id", metavar="ID", help="id, registries/<id> or display name")
        command.set_defaults(func=func)
        if name == "rotate":
            command.add_argument("--password-stdin", action="store_true", help="read from stdin")
            command.add_argument("--username", help="new username (default: keep the current one)")
            command.add_argument(
                "--no-test",
                action="store_true",
                help="rotate without asking the registry first (for a registry that is down)",
            )
    kinds = commands.add_parser(
        "kinds", help="registry kinds, the fields each takes, and their defaults"
    )
    kinds.add_argument("kind", nargs="?", metavar="KIND", help="show one kind's fields in detail")
    kinds.set_defaults(func=cmd_kinds)
    for command in commands.choices.values():
        add_common_options(command)


def cmd_add(args: argparse.Namespace) -> int:
    extra = CloudOptions(args.role_arn, args.service_account_key, args.tenant_id, args.client_id)
    credential = _new_credential(args.type, args.username, args.password_stdin, args.url, extra)
    registry = registry_pb2.Registry(
        display_name=args.name,
        type=args.type,
        url=args.url,
        region=args.region,
        allow_basic_passthrough=args.allow_basic_passthrough,
        registry_ca_pem=_read_ca(args.registry_ca) if args.registry_ca else "",
        repositories=_globs(args.repositories),
    )
    with client_for(args) as client:
        created = client.create_registry(registry, credential, test=args.test)
    _show_registry(args, created)
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        current = resolve(client, args.id)
        changed = registry_pb2.Registry(
            name=current.name, etag=current.etag, repositories=_globs(args.repositories)
        )
        updated = client.update_registry(changed, ["repositories"])
    _show_registry(args, updated)
    return 0


def _repositories_option(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    parser.add_argument(
        "--repositories",
        action="append",
        default=[],
        required=required,
        metavar="GLOBS",
        help="repository globs of the host this record serves, e.g. 'acme/*' or 'acme/**' "
        "(repeat the flag or separate with commas; '' clears: every repository). Tells "
        "several records for one host apart: the most specific match wins",
    )


def _globs(values: list[str]) -> list[str]:
    return [g.strip() for value in values for g in value.split(",") if g.strip()]


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
        updated = client.update_registry(target, (), credential, skip_test=args.no_test)
    if wants_json(args):
        print(output.dumps(output.to_dict(updated)))
    else:
        tested = "not tested" if args.no_test else "the registry accepted it"
        print(
            f"rotated {updated.display_name}: credential version {updated.credential_version} "
            f"({tested}; `pullbroker registry rollback {updated.display_name}` goes back)"
        )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        current = resolve(client, args.id)
        rolled = client.rollback_registry(current.name, current.etag)
    if wants_json(args):
        print(output.dumps(output.to_dict(rolled)))
    else:
        print(
            f"rolled back {rolled.display_name}: the previous credential is current again "
            f"(credential version {rolled.credential_version})"
        )
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


@dataclass(frozen=True)
class CloudOptions:
    """Credential parts of the cloud kinds that are not the secret itself."""

    role_arn: str = ""
    service_account_key: str | None = None
    tenant_id: str = ""
    client_id: str = ""


def _new_credential(
    kind: int,
    username: str | None,
    stdin: bool,
    url: str,
    extra: CloudOptions = CloudOptions(),
) -> Any | None:
    if kind == registry_pb2.REGISTRY_TYPE_PUBLIC:
        if username or stdin:
            raise UsageError(
                "a public registry takes no credential: drop --username/--password-stdin"
            )
        return None
    if kind in _GOOGLE:
        return _google_credential(stdin, extra.service_account_key)
    if kind == registry_pb2.REGISTRY_TYPE_ACR and (extra.tenant_id or extra.client_id):
        return _azure_credential(stdin, extra)
    if not username:
        what = "the access key id" if kind == registry_pb2.REGISTRY_TYPE_ECR else "the username"
        raise UsageError(f"--username is required: give {what} for this registry")
    password = read_password(
        from_stdin=stdin, prompt=f"Password for {username} at {url or 'the registry'}: "
    )
    if kind == registry_pb2.REGISTRY_TYPE_ECR:
        aws = registry_pb2.AwsCredential(
            access_key_id=username, secret_access_key=password.reveal(), role_arn=extra.role_arn
        )
        return registry_pb2.Credential(aws=aws)
    return _basic(username, password)


def _google_credential(stdin: bool, key_file: str | None) -> Any:
    if key_file:
        if stdin:
            raise UsageError("give the key either as --service-account-key or on stdin, not both")
        key = _read_text(key_file, "--service-account-key", "the service-account key file")
    else:
        key = read_password(from_stdin=stdin, prompt="Service-account key JSON: ").reveal()
    return registry_pb2.Credential(google=registry_pb2.GoogleServiceAccount(key_json=key))


def _azure_credential(stdin: bool, extra: CloudOptions) -> Any:
    if not (extra.tenant_id and extra.client_id):
        raise UsageError("a service principal needs both --tenant-id and --client-id")
    secret = read_password(from_stdin=stdin, prompt=f"Client secret of {extra.client_id}: ")
    principal = registry_pb2.AzureServicePrincipal(
        tenant_id=extra.tenant_id, client_id=extra.client_id, client_secret=secret.reveal()
    )
    return registry_pb2.Credential(azure=principal)


def _basic(username: str, password: Secret) -> Any:
    basic = registry_pb2.BasicCredential(username=username, password=password.reveal())
    return registry_pb2.Credential(basic=basic)


def _read_ca(path: str) -> str:
    return _read_text(path, "--registry-ca", "the CA's PEM file")


def _read_text(path: str, flag: str, what: str) -> str:
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"{flag} {path} does not exist: give {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read {flag} {path}: {type(exc).__name__}") from None


def _show_registry(args: argparse.Namespace, registry: Any) -> None:
    if wants_json(args):
        print(output.dumps(output.to_dict(registry)))
    else:
        print(output.registry_details(registry))
