"""The client side: home resolution, password input, and the CLI parser's refusals."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pullbroker_client.cli import build_parser
from pullbroker_client.cli.password import read_password
from pullbroker_client.cli.registry import TYPES, registry_type
from pullbroker_client.errors import ConfigurationError
from pullbroker_client.home import Home


class TestHome:
    def test_precedence(self, tmp_path: Path) -> None:
        """--home beats $PULLBROKER_HOME, which beats ~/.pullbroker."""
        env = {"PULLBROKER_HOME": str(tmp_path / "env")}
        assert Home.resolve(tmp_path / "flag", env).root == tmp_path / "flag"
        assert Home.resolve(None, env).root == tmp_path / "env"
        assert Home.resolve(None, {}).root == Path("~/.pullbroker").expanduser()

    def test_missing_broker_json_says_what_to_do(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A home (tls/ made) without broker.json: the error names `pullbroker serve`."""
        monkeypatch.setenv("PULLBROKER_HOME", str(tmp_path / "nowhere"))
        (tmp_path / "tls").mkdir()
        with pytest.raises(ConfigurationError, match="pullbroker serve"):
            Home(tmp_path).read_address()


class TestPassword:
    def test_stdin_strips_one_newline(self) -> None:
        """--password-stdin keeps the secret verbatim except one trailing newline."""
        secret = read_password(from_stdin=True, prompt="", stdin=io.StringIO(" p w \n"))
        assert secret.reveal() == " p w "

    def test_empty_stdin_is_refused(self) -> None:
        """An empty password on stdin is an error."""
        with pytest.raises(ConfigurationError, match="empty"):
            read_password(from_stdin=True, prompt="", stdin=io.StringIO("\n"))

    def test_no_terminal_and_no_stdin_flag_is_refused(self) -> None:
        """Off a terminal without --password-stdin there is no way to ask: clear error."""
        with pytest.raises(ConfigurationError, match="--password-stdin"):
            read_password(from_stdin=False, prompt="", stdin=io.StringIO("x"), tty=False)

    def test_prompt_on_terminal(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """On a terminal the password is read with getpass (no echo)."""
        monkeypatch.setattr("getpass.getpass", lambda prompt: "typed-secret")
        secret = read_password(from_stdin=False, prompt="pw: ", tty=True)
        assert secret.reveal() == "typed-secret"


class TestParser:
    @pytest.mark.parametrize(
        "argv",
        [
            ["registry", "add", "--password", "hunter2-xyz"],
            ["registry", "add", "--password=hunter2-xyz"],
            ["registry", "rotate", "id", "--pass", "hunter2-xyz"],
            ["registry", "rotate", "id", "-p", "hunter2-xyz"],
        ],
    )
    def test_password_flags_are_usage_errors(
        self, argv: list[str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Any password-looking flag exits 2 with a hint and without echoing the value."""
        parser, _ = build_parser()
        with pytest.raises(SystemExit) as caught:
            parser.parse_args(argv)
        assert caught.value.code == 2
        err = capsys.readouterr().err
        assert "never accepted as an argument" in err
        assert "hunter2-xyz" not in err

    def test_abbreviations_are_not_expanded(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--pass-stdin is not taken as --password-stdin (no abbreviations)."""
        parser, _ = build_parser()
        with pytest.raises(SystemExit):
            parser.parse_args(
                [
                    "registry",
                    "add",
                    "--name",
                    "a",
                    "--type",
                    "generic",
                    "--url",
                    "u",
                    "--password-std",
                ]
            )
        assert "error" in capsys.readouterr().err

    def test_types_accept_spellings(self) -> None:
        """Types are case-insensitive and accept '-' for '_'."""
        assert registry_type("Docker-Hub") == TYPES["docker_hub"]

    def test_unknown_type_lists_all(self) -> None:
        """An unknown type names every accepted one."""
        with pytest.raises(
            Exception, match="generic, public, docker_hub, ghcr, quay, harbor, ecr, gcr, gar, acr"
        ):
            registry_type("dockerhub")

    def test_options_before_or_after_command(self) -> None:
        """--home and --output work before the command and after it."""
        parser, _ = build_parser()
        before = parser.parse_args(["--home", "/h", "-o", "json", "registry", "list"])
        after = parser.parse_args(["registry", "list", "--home", "/h", "-o", "json"])
        assert (before.home, before.output) == (after.home, after.output) == ("/h", "json")
