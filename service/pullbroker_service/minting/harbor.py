"""Kind harbor: a self-hosted Harbor (url required), tokens from <host>/service/token.

Credentials: a Harbor user and password, or a robot account - `robot$NAME` (system robot) or
`robot$PROJECT+NAME` (project robot) - and its secret. Repositories are PROJECT/NAME.
"""

from __future__ import annotations

from pullbroker_service.domain.model import RegistryKind
from pullbroker_service.minting.token_kind import TokenKind
from pullbroker_service.minting.upstream import Hints

HARBOR = TokenKind(
    RegistryKind.HARBOR,
    "Harbor",
    Hints(
        rejected="check the user name (robot accounts: the full robot$... name) and its "
        "secret; robot secrets expire and are replaced when refreshed",
        not_allowed="add the user or robot to the project with at least pull permission "
        "(Limited Guest or a robot with repository pull)",
        not_found="check the project and repository name (PROJECT/NAME, lowercase) and tag",
    ),
)
