"""The broker speaks in API field names; a person at the CLI needs the flag that sets them.

The broker's messages name fields as the API spells them (`registry_ca_pem`, "name one in
the request") because grpcurl users and internal services read them too. The CLI rewrites
those names into its own flags before printing, so the advice is something to type. Both
`pullbroker` and `pullbroker-sidecar` use it; standard library only, since the sidecar's
pull imports it.
"""

from __future__ import annotations

import re

# (API spelling, the flag that sets it). Longer spellings first: `credential.azure.client_id`
# must not be half-rewritten by the rule for `client_id`.
_FIELDS: tuple[tuple[str, str], ...] = (
    (r"registry\.display_name|display_name", "--name"),
    (r"registry\.registry_ca_pem|registry_ca_pem", "--registry-ca"),
    (r"registry\.allow_basic_passthrough|allow_basic_passthrough", "--allow-basic-passthrough"),
    (r"\bregistry\.repositories\b", "--repositories"),
    (r"credential\.azure\.tenant_id|tenant_id", "--tenant-id"),
    (r"credential\.azure\.client_id|client_id", "--client-id"),
    (r"credential\.aws\.role_arn|role_arn", "--role-arn"),
    (r"credential key_json|key_json", "--service-account-key"),
    (r"skip_test", "--no-test"),
)
_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = (
    *((re.compile(rf"(?<![\w.-])(?:{api})(?![\w-])"), flag) for api, flag in _FIELDS),
    (re.compile(r"name one in the request"), "name one with --registry"),
)


def as_flags(message: str) -> str:
    """`message` with the API's field names replaced by the CLI flags that set them."""
    for pattern, flag in _REWRITES:
        message = pattern.sub(flag, message)
    return message
