"""The database password is scrubbed in every form, however the connection string spells it;
a string libpq cannot read is refused at start without repeating any of it."""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import quote

import pytest
from pullbroker_service.bootstrap.stores import open_database
from pullbroker_service.config.database import DatabaseConfig
from pullbroker_service.config.errors import ConfigError
from pullbroker_service.infra.logging import scrub

from tests.harness.canary import new_canary


def url_file(tmp_path: Path, text: str) -> DatabaseConfig:
    path = tmp_path / "db-url"
    path.write_text(text)
    return DatabaseConfig(url_file=path)


@pytest.mark.parametrize(
    "spelling",
    [
        "postgresql://pb:{encoded}@127.0.0.1:5432/pb",
        "postgresql://pb@127.0.0.1:5432/pb?password={encoded}",
        "host=127.0.0.1 user=pb password='{quoted}' dbname=pb",
    ],
    ids=["uri", "uri-query", "key-value-quoted"],
)
def test_every_spelling_registers_the_password(tmp_path: Path, spelling: str) -> None:
    """A password with a space, an @ and a quote: whatever form the string holds it in
    (percent-encoded, quoted), the decoded password and its encodings are scrubbed."""
    password = new_canary("db") + " w@it's"
    text = spelling.format(encoded=quote(password, safe=""), quoted=password.replace("'", "\\'"))
    open_database(url_file(tmp_path, text))  # a pool is made, not opened: nothing is dialled
    for form in (password, quote(password, safe=""), base64.b64encode(password.encode()).decode()):
        assert form not in scrub(f"connection failed for {form}: FATAL"), form


def test_a_string_libpq_cannot_read_is_refused_without_a_fragment(tmp_path: Path) -> None:
    """libpq would say 'missing "=" after "words"' (a piece of the password); the broker
    refuses at start and repeats nothing of it."""
    with pytest.raises(ConfigError, match="not a PostgreSQL connection string") as refused:
        open_database(url_file(tmp_path, "host=127.0.0.1 password=two words here"))
    assert "words" not in str(refused.value)
