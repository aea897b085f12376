"""The `pullbroker` command as a person runs it: subprocesses against `pullbroker serve`."""

from __future__ import annotations

import json
import os
import pty
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pullbroker_client.broker import BrokerClient, BrokerTarget
from pullbroker_client.cli.health import KNOWN_SERVICES
from pullbroker_client.tls import TlsFiles
from pullbroker_service.api.server import HEALTH_SERVICES

from tests.harness.canary import find_in_text, find_in_tree, new_canary
from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import ALICE
from tests.integration.conftest import PULLBROKER, ServeProcess

pytestmark = pytest.mark.integration


@dataclass
class Transcript:
    """Every command run and everything it printed, to search for leaks afterwards."""

    outputs: list[str] = field(default_factory=list)

    def run(
        self, home: Path, *args: str, stdin: str | None = None, user_home: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "PULLBROKER_HOME"}
        if user_home is not None:
            env["HOME"] = str(user_home)  # so ~/.pullbroker is the test's, not this machine's
        done = subprocess.run(
            [PULLBROKER, *args, "--home", str(home)],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        self.outputs += [" ".join(done.args), done.stdout, done.stderr]
        return done

    def holds(self, needle: str) -> bool:
        return any(find_in_text(text, needle) for text in self.outputs)


@pytest.fixture
def cli() -> Transcript:
    return Transcript()


@pytest.fixture
def served(serve_process: Callable[..., ServeProcess]) -> ServeProcess:
    return serve_process()


def add_args(name: str, reg: TokenAuthRegistry, ca_file: Path, user: str = ALICE) -> list[str]:
    return [
        "registry", "add", "--name", name, "--type", "generic", "--url", reg.url,
        "--username", user, "--registry-ca", str(ca_file), "--password-stdin",
    ]  # fmt: skip


def ca_file(reg: TokenAuthRegistry, folder: Path) -> Path:
    path = folder / "registry-ca.pem"
    path.write_text(reg.ca_pem)
    return path


class TestCanary:
    def test_canary_password_leaks_nowhere(
        self,
        serve_process: Callable[..., ServeProcess],
        make_token_registry: Callable[..., TokenAuthRegistry],
        cli: Transcript,
        tmp_path: Path,
    ) -> None:
        """A canary password used by add, test, token, rotate, delete is in no file or output."""
        reg = make_token_registry()
        first, second = new_canary("cli-first"), new_canary("cli-second")
        reg.add_user("canary-user", first, {"team/*": ["pull"]})
        served = serve_process()
        home = served.home.root
        ca = ca_file(reg, tmp_path)
        added = cli.run(home, *add_args("canary", reg, ca, "canary-user"), "--test", stdin=first)
        assert added.returncode == 0, added.stderr
        assert cli.run(home, "registry", "test", "canary").returncode == 0
        target = BrokerTarget.from_home(served.home, "node")
        with BrokerClient(target) as node:
            token = node.issue_pull_token(f"{reg.host}/team/app:v1")
        assert token.token.reveal()
        reg.set_password("canary-user", second)
        rotated = cli.run(home, "registry", "rotate", "canary", "--password-stdin", stdin=second)
        assert rotated.returncode == 0, rotated.stderr
        assert "credential version 2" in rotated.stdout
        assert cli.run(home, "registry", "test", "canary", "-o", "json").returncode == 0
        assert cli.run(home, "registry", "delete", "canary").returncode == 0
        assert served.stop() == 0
        for canary in (first, second):
            assert find_in_tree(home, canary) == []
            assert not cli.holds(canary)
            assert not find_in_text(served.stderr_path.read_text(), canary)
            assert not find_in_text(served.stdout_path.read_text(), canary)
        assert "registry_created" in (home / "logs" / "broker.log").read_text()


class TestOutput:
    def test_json_output_parses(
        self,
        served: ServeProcess,
        token_registry: TokenAuthRegistry,
        cli: Transcript,
        tmp_path: Path,
    ) -> None:
        """--output json prints parseable JSON for add, get, list, test and delete."""
        home = served.home.root
        ca = ca_file(token_registry, tmp_path)
        password = token_registry.users[ALICE]
        added = cli.run(
            home, *add_args("json-reg", token_registry, ca), "-o", "json", stdin=password
        )
        assert added.returncode == 0, added.stderr
        record = json.loads(added.stdout)
        assert record["display_name"] == "json-reg"
        assert record["type"] == "REGISTRY_TYPE_GENERIC"
        listed = json.loads(cli.run(home, "registry", "list", "-o", "json").stdout)
        assert [r["name"] for r in listed["registries"]] == [record["name"]]
        got = json.loads(cli.run(home, "registry", "get", record["name"], "-o", "json").stdout)
        assert got["etag"] == record["etag"]
        tested = json.loads(cli.run(home, "registry", "test", "json-reg", "-o", "json").stdout)
        assert tested["outcome"] == "CONNECTION_OUTCOME_OK"
        deleted = json.loads(cli.run(home, "registry", "delete", "json-reg", "-o", "json").stdout)
        assert deleted["deleted"] == record["name"]
        assert not cli.holds(password)

    def test_id_forms_all_resolve(
        self,
        served: ServeProcess,
        token_registry: TokenAuthRegistry,
        cli: Transcript,
        tmp_path: Path,
    ) -> None:
        """`get` accepts the bare id, registries/<id> and the display name."""
        home = served.home.root
        ca = ca_file(token_registry, tmp_path)
        added = cli.run(
            home, *add_args("ids", token_registry, ca), "-o", "json", stdin="pw-1234567"
        )
        name = json.loads(added.stdout)["name"]
        for ident in (name, name.removeprefix("registries/"), "ids"):
            done = cli.run(home, "registry", "get", ident, "-o", "json")
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["name"] == name

    def test_table_output(self, served: ServeProcess, cli: Transcript) -> None:
        """The default output is a table, or a note when there are no registries."""
        done = cli.run(served.home.root, "registry", "list")
        assert done.returncode == 0
        assert "no registries" in done.stdout


class TestPasswords:
    @pytest.mark.parametrize(
        "flag", [["--password", "hunter2-secret"], ["--password=hunter2-secret"]]
    )
    def test_password_argument_is_refused(
        self, flag: list[str], cli: Transcript, tmp_path: Path
    ) -> None:
        """A password flag is a usage error (exit 2) that never echoes the value."""
        done = cli.run(
            tmp_path, "registry", "add", "--name", "x", "--type", "generic",
            "--url", "https://r.example", "--username", "u", *flag,
        )  # fmt: skip
        assert done.returncode == 2
        assert "never accepted as an argument" in done.stderr
        assert "hunter2-secret" not in done.stdout + done.stderr

    def test_extra_positional_is_not_echoed(self, cli: Transcript, tmp_path: Path) -> None:
        """A stray argument (a password pasted by mistake) is refused without echoing it."""
        done = cli.run(tmp_path, "registry", "list", "pasted-secret-value")
        assert done.returncode == 2
        assert "pasted-secret-value" not in done.stdout + done.stderr

    def test_no_password_source_off_terminal(self, served: ServeProcess, cli: Transcript) -> None:
        """Without --password-stdin and without a terminal, add fails saying what to do."""
        done = cli.run(
            served.home.root, "registry", "add", "--name", "np", "--type", "generic",
            "--url", "https://r.example", "--username", "u",
        )  # fmt: skip
        assert done.returncode == 1
        assert "--password-stdin" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def run_on_terminal(args: list[str], typed: str) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal, type `typed` at its prompt; (exit code, screen)."""
    env = {k: v for k, v in os.environ.items() if k != "PULLBROKER_HOME"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty
        os.execve(PULLBROKER, [PULLBROKER, *args], env)  # noqa: S606 - argv list, no shell
    screen = b""
    try:
        while b"Password" not in screen:
            screen += os.read(fd, 1024)
        os.write(fd, typed.encode() + b"\n")
        while True:
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            screen += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), screen.decode(errors="replace")


class TestTerminalPrompt:
    def test_prompt_does_not_echo(
        self, served: ServeProcess, token_registry: TokenAuthRegistry, tmp_path: Path
    ) -> None:
        """On a terminal, add prompts for the password without echoing it, and succeeds."""
        password = token_registry.users[ALICE]
        args = add_args("tty-reg", token_registry, ca_file(token_registry, tmp_path))
        args = [a for a in args if a != "--password-stdin"] + ["--home", str(served.home.root)]
        code, screen = run_on_terminal(args, password)
        assert code == 0, screen
        assert "Password for alice" in screen
        assert "tty-reg" in screen
        assert not find_in_text(screen, password)


class TestErrors:
    def test_unknown_type_lists_types(self, cli: Transcript, tmp_path: Path) -> None:
        """An unknown --type is a usage error listing every type."""
        done = cli.run(
            tmp_path, "registry", "add", "--name", "x", "--type", "dockerhub2",
            "--url", "https://r.example", "--password-stdin",
        )  # fmt: skip
        assert done.returncode == 2
        for kind in ("generic", "public", "docker_hub", "ghcr", "quay", "harbor", "ecr", "acr"):
            assert kind in done.stderr

    def test_not_found_is_one_line(self, served: ServeProcess, cli: Transcript) -> None:
        """An unknown registry is exit 1 with one line on stderr and no traceback."""
        done = cli.run(served.home.root, "registry", "get", "nope")
        assert done.returncode == 1
        assert len(done.stderr.strip().splitlines()) == 1
        assert "Traceback" not in done.stderr
        assert "registry list" in done.stderr

    def test_no_broker_says_how_to_start_one(self, cli: Transcript, tmp_path: Path) -> None:
        """A home (its tls/ made) without broker.json: the error says to run `pullbroker serve`."""
        (tmp_path / "empty-home" / "tls").mkdir(parents=True)
        done = cli.run(tmp_path / "empty-home", "registry", "list")
        assert done.returncode == 1
        assert "pullbroker serve" in done.stderr

    def test_a_folder_that_is_no_home_says_so(self, cli: Transcript, tmp_path: Path) -> None:
        """`--home` at a folder that is no pullbroker home: no advice to serve one there."""
        done = cli.run(tmp_path, "registry", "list", user_home=tmp_path / "user")
        assert done.returncode == 1
        assert "is not a pullbroker home" in done.stderr
        assert "pullbroker serve --home" not in done.stderr

    def test_stopped_broker_is_unreachable(
        self, served: ServeProcess, cli: Transcript, tmp_path: Path
    ) -> None:
        """Pointing at a broker that is gone says it cannot be reached (exit 1)."""
        address = served.address
        assert served.stop() == 0
        assert not served.home.broker_json.exists()
        done = cli.run(served.home.root, "registry", "list", "--broker", address)
        assert done.returncode == 1
        assert "cannot reach the broker" in done.stderr

    def test_public_registry_takes_no_password(self, served: ServeProcess, cli: Transcript) -> None:
        """`--type public` with a password is a usage error (exit 2)."""
        done = cli.run(
            served.home.root, "registry", "add", "--name", "pub", "--type", "public",
            "--url", "https://r.example", "--password-stdin", stdin="x",
        )  # fmt: skip
        assert done.returncode == 2
        assert "public" in done.stderr

    def test_overrides_select_certificates(self, served: ServeProcess, cli: Transcript) -> None:
        """--cert/--key override the admin certificate: the node cert is denied (exit 1)."""
        tls = TlsFiles.from_home(served.home, "node")
        done = cli.run(
            served.home.root, "registry", "list", "--cert", str(tls.cert), "--key", str(tls.key)
        )
        assert done.returncode == 1
        assert "PERMISSION_DENIED" in done.stderr


class TestHealth:
    """`pullbroker health` asks grpc.health.v1 over mTLS, for exec probes."""

    def test_serving_broker_exits_zero(self, served: ServeProcess, cli: Transcript) -> None:
        """Overall and PullService status are SERVING, exit 0; JSON names the status."""
        home = served.home.root
        overall = cli.run(home, "health")
        assert overall.returncode == 0, overall.stderr
        assert "SERVING" in overall.stdout
        pull = cli.run(home, "health", "--service", "pullbroker.v1.PullService", "-o", "json")
        assert pull.returncode == 0, pull.stderr
        assert json.loads(pull.stdout)["status"] == "SERVING"

    def test_unknown_service_exits_one(self, served: ServeProcess, cli: Transcript) -> None:
        """A service the broker does not report on is named as such (not "unreachable"),
        with the ones it does report on, and exits 1."""
        done = cli.run(served.home.root, "health", "--service", "no.such.Service")
        assert done.returncode == 1
        assert "unreachable" not in done.stdout
        assert "UNKNOWN_SERVICE" in done.stdout
        assert "pullbroker.v1.PullService" in done.stdout

    def test_the_cli_knows_what_the_broker_reports_on(self) -> None:
        """The CLI's list of health services is the broker's (it names them in advice)."""
        assert KNOWN_SERVICES == HEALTH_SERVICES


class TestServeAddressInUse:
    """`serve` on a taken address fails at once with one line naming the flag."""

    def test_taken_port_is_one_line(self, tmp_path: Path) -> None:
        """No gRPC error dump, no traceback: one line that says what to change."""
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            listen = f"127.0.0.1:{holder.getsockname()[1]}"
            done = subprocess.run(
                [PULLBROKER, "serve", "--home", str(tmp_path / "home"), "--listen", listen],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        assert done.returncode != 0
        errors = [line for line in done.stderr.splitlines() if not line.startswith("{")]
        assert errors == [
            f"pullbroker: error: the broker could not start: cannot listen on {listen}: the "
            "address is in use (another broker? `pullbroker health` tells); pick another "
            "address with --listen"
        ]
