"""The committed stubs are exactly what `make protos` would generate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class TestGeneratedStubs:
    """Generated code never drifts from the contract in protos/."""

    def test_committed_stubs_match_protos(self) -> None:
        """protos/generate.py --check passes on the committed stubs."""
        result = subprocess.run(
            [
                sys.executable,
                str(ROOT / "protos" / "generate.py"),
                "--check",
                str(ROOT / "clients"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def test_check_detects_a_stale_stub(self, tmp_path: Path) -> None:
        """A stub edited by hand is reported as stale."""
        import shutil

        shutil.copytree(ROOT / "clients" / "pullbroker", tmp_path / "pullbroker")
        stub = tmp_path / "pullbroker" / "v1" / "pull_pb2.pyi"
        stub.write_text(stub.read_text() + "\n# edited by hand\n")
        result = subprocess.run(
            [sys.executable, str(ROOT / "protos" / "generate.py"), "--check", str(tmp_path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 1
        assert "pull_pb2.pyi" in result.stdout
