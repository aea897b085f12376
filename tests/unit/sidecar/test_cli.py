"""The sidecar command line: one clear error line and a non-zero exit, before any network."""

from __future__ import annotations

from pathlib import Path

import pytest
from pullbroker_sidecar.cli import main


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    return lines[0]


class TestCli:
    def test_dest_must_be_an_oci_layout(
        self, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        """--dest without the oci: prefix is refused with what is accepted."""
        assert main(["pull", "r.example/team/app:v1", "--dest", str(tmp_path)]) == 1
        assert "is not oci:DIR" in _error_line(capsys)

    def test_platform_must_parse(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """A malformed --platform names the expected form."""
        argv = ["pull", "r.example/team/app:v1", "--dest", f"oci:{tmp_path}", "--platform", "arm"]
        assert main(argv) == 1
        assert "OS/ARCH" in _error_line(capsys)

    def test_invalid_reference(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """An image reference that does not parse fails before the broker is asked."""
        argv = ["pull", "r.example/Team/App:v1", "--dest", f"oci:{tmp_path}", "--home", "/nope"]
        assert main(argv) == 1
        assert _error_line(capsys).startswith("pullbroker-sidecar: error: pull of r.example/")

    def test_missing_broker_address_says_how_to_fix(
        self, capsys: pytest.CaptureFixture[str], tmp_home: Path, tmp_path: Path
    ) -> None:
        """A home without broker.json points at `pullbroker serve` and --broker."""
        argv = ["pull", "r.example/team/app:v1", "--dest", f"oci:{tmp_path / 'd'}"]
        assert main([*argv, "--home", str(tmp_home)]) == 1
        line = _error_line(capsys)
        assert "--broker" in line
        assert not (tmp_path / "d").exists()

    def test_missing_node_certificate_names_the_flag(
        self, capsys: pytest.CaptureFixture[str], tmp_home: Path, tmp_path: Path
    ) -> None:
        """With --broker but no node certificate, the error says which file and flag."""
        argv = ["pull", "r.example/team/app:v1", "--dest", f"oci:{tmp_path / 'd'}"]
        argv += ["--home", str(tmp_home), "--broker", "127.0.0.1:9"]
        assert main(argv) == 1
        line = _error_line(capsys)
        assert "does not exist" in line
        assert "--ca" in line or "--cert" in line

    def test_concurrency_is_bounded(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--concurrency outside 1-16 is a usage error (exit 2)."""
        argv = ["pull", "r.example/team/app:v1", "--dest", "oci:/tmp/x", "--concurrency", "99"]
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        assert "--concurrency" in capsys.readouterr().err

    @pytest.mark.parametrize("command", ["pull", "run"])
    def test_otlp_endpoint_must_be_a_url(
        self, command: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        """--otlp-endpoint that is not an http(s) URL is refused before anything runs, with
        one line naming the flag."""
        args = ["r.example/team/app:v1", "--dest", f"oci:{tmp_path}"] if command == "pull" else []
        argv = [command, *args, "--otlp-endpoint", "collector:4318", "--home", str(tmp_path)]
        try:
            status = main(argv)
        except SystemExit as exited:  # pull: argparse's usage error
            status = int(exited.code or 0)
        assert status in (1, 2)
        err = capsys.readouterr().err
        assert "--otlp-endpoint" in err
        assert "http:// or https://" in err
