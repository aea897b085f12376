"""`pullbroker policy check IDENTITY IMAGE`: explain the broker's live policy decision.

The broker answers (PolicyService.CheckAccess), so the decision is made on the policy it has
loaded and the registry record it would pick, exactly as for a node's token request. Exit
status 0 when allowed, 1 when denied.
"""

from __future__ import annotations

import argparse
from typing import Any

from pullbroker_client.cli import output
from pullbroker_client.cli.common import client_for, wants_json
from pullbroker_client.cli.parser import EXIT_FAILURE, add_common_options


def add_policy_commands(subparsers: Any) -> None:
    """Attach `policy ...` to the top-level subparsers."""
    policy = subparsers.add_parser("policy", help="explain policy decisions (admin)")
    commands = policy.add_subparsers(dest="policy_command", metavar="COMMAND", required=True)
    check = commands.add_parser(
        "check", help="would IDENTITY be allowed to pull IMAGE, and which rule decides?"
    )
    check.add_argument("identity", metavar="IDENTITY", help="spiffe://… ID or CN=<common name>")
    check.add_argument("image", metavar="IMAGE", help="e.g. ghcr.io/acme/app:1.2")
    check.add_argument("--registry", default="", help="registry record, when several serve it")
    check.set_defaults(func=cmd_check)
    add_common_options(check)


def cmd_check(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        answer = client.check_access(args.identity, args.image, args.registry)
    if wants_json(args):
        print(output.dumps(output.to_dict(answer)))
    else:
        print(explanation(args.identity, args.image, answer))
    return 0 if answer.allowed else EXIT_FAILURE


def explanation(identity: str, image: str, answer: Any) -> str:
    """The decision for a person: verdict, why, and what it was decided on."""
    verdict = "allowed" if answer.allowed else "denied"
    rows = [
        (verdict, f"{identity} pulling {image}"),
        ("reason", answer.reason),
        ("rule", str(answer.rule) if answer.rule else ""),
        ("roles", ", ".join(answer.roles) or "none"),
        ("registry", answer.registry),
        ("repository", answer.repository),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in rows if v)
