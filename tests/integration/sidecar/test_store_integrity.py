"""What is already on the node is not trusted blindly; what a registry declares is bounded.

Real pulls (`pullbroker-sidecar pull` subprocesses, a real broker and registry) into
layouts and node stores that were tampered with, of images the registry was made to serve
with hostile manifests, and after a pull killed with SIGKILL.
"""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.planted import plant_image
from tests.integration.sidecar.frontdoor import FrontDoor
from tests.integration.sidecar.test_pull import _assert_only_verified_blobs, _pull, _pull_ok
from tests.integration.sidecar.world import SidecarWorld

pytestmark = pytest.mark.integration

NESTING = 100_000


def _blob(root: Path, digest: str) -> Path:
    return root / "blobs" / "sha256" / digest.split(":", 1)[1]


def _hashes_to_name(path: Path) -> bool:
    return hashlib.sha256(path.read_bytes()).hexdigest() == path.name


def _plant_wrong_file(path: Path) -> None:
    """Same size, other bytes, a new file (as a user or another tool would leave it)."""
    size = path.stat().st_size
    path.unlink()
    path.write_bytes(b"W" * size)


def _overwrite_in_place(path: Path) -> None:
    """Same size, other bytes, same inode, mtime set back: only the ctime shows the write."""
    before = path.stat()
    path.chmod(0o644)
    with path.open("r+b") as fh:
        fh.write(b"V" * before.st_size)
    path.chmod(stat.S_IMODE(before.st_mode))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    assert not _hashes_to_name(path)


def _plant_symlink(path: Path, outside: Path) -> None:
    """A symlink at the digest name to a file of the right size but other bytes."""
    outside.write_bytes(b"S" * path.stat().st_size)
    path.unlink()
    path.symlink_to(outside)


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


class TestPoisoning:
    def test_a_write_through_an_oci_destination_never_reaches_the_store(
        self, world: SidecarWorld, tmp_path: Path
    ) -> None:
        """Overwriting a layer in an oci: layout leaves the store verified; later pulls heal."""
        app, store = world.images.app, tmp_path / "store"
        first, second = tmp_path / "first", tmp_path / "second"
        _pull_ok(world, world.via_door(app), first, "--store", str(store))
        layer = _blob(first, app.layer_digests[1])
        layer.chmod(0o644)
        with layer.open("r+b") as fh:
            fh.write(b"\0" * layer.stat().st_size)
        assert _hashes_to_name(_blob(store, app.layer_digests[1]))
        _pull_ok(world, world.via_door(app), second, "--store", str(store))
        _assert_only_verified_blobs(second)
        _pull_ok(world, world.via_door(app), first, "--store", str(store))
        _assert_only_verified_blobs(first)

    def test_a_wrong_file_and_a_symlink_in_the_store_are_not_trusted(
        self, world: SidecarWorld, tmp_path: Path
    ) -> None:
        """Written in place or symlinked in the store: re-downloaded; the link's target untouched.

        The write keeps the inode, the size and (set back) the mtime, so only the ctime in
        the blob's fingerprint can tell it from the file that was verified.
        """
        app, store, outside = world.images.app, tmp_path / "store", tmp_path / "outside"
        _pull_ok(world, world.via_door(app), tmp_path / "first", "--store", str(store))
        wrong, linked = (_blob(store, d) for d in app.layer_digests)
        _overwrite_in_place(wrong)
        _plant_symlink(linked, outside)
        before = outside.read_bytes()
        dest = tmp_path / "second"
        _pull_ok(world, world.via_door(app), dest, "--store", str(store))
        _assert_only_verified_blobs(dest)
        assert not any(p.is_symlink() for p in dest.rglob("*"))
        assert not linked.is_symlink()
        assert _hashes_to_name(wrong)
        assert _hashes_to_name(linked)
        assert outside.read_bytes() == before

    def test_a_wrong_file_and_a_symlink_in_a_layout_are_replaced(
        self, world: SidecarWorld, tmp_path: Path
    ) -> None:
        """In an oci: layout (its own store), files not hashing to their name are fetched again."""
        app, dest, outside = world.images.app, tmp_path / "layout", tmp_path / "outside"
        _pull_ok(world, world.via_door(app), dest)
        wrong, linked = (_blob(dest, d) for d in app.layer_digests)
        _plant_wrong_file(wrong)
        _plant_symlink(linked, outside)
        before = outside.read_bytes()
        result = _pull_ok(world, world.via_door(app), dest)
        assert result["fetched"] == 2
        assert not linked.is_symlink()
        _assert_only_verified_blobs(dest)
        assert outside.read_bytes() == before


class TestHostileManifests:
    def test_a_deeply_nested_config_is_one_line_and_tags_nothing(
        self, world: SidecarWorld, tmp_path: Path
    ) -> None:
        """A config nested 100k deep: one-line error, and index.json exactly as before."""
        config = b'{"a":' + b"[" * NESTING + b"]" * NESTING + b"}"
        plant_image(world.registry, "team/nested", "v1", config, [(os.urandom(512), 512)])
        dest = tmp_path / "nested"
        _pull_ok(world, world.via_door(world.images.app), dest)
        index = (dest / "index.json").read_bytes()
        result = _pull(world, f"{world.door.host}/team/nested:v1", dest, "--quiet")
        assert result.returncode == 1
        line = _one_line(result)
        assert "the config of" in line
        assert "nests deeper than 64 levels" in line
        assert (dest / "index.json").read_bytes() == index

    def test_a_terabyte_layer_is_refused_before_any_download(
        self, world: SidecarWorld, door: FrontDoor, tmp_path: Path
    ) -> None:
        """A manifest declaring a 1 TiB layer fails naming --max-blob-size; no blob is asked for."""
        config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}'
        plant_image(
            world.registry, "team/huge", "v1", config, [(os.urandom(512), 512), (None, 1 << 40)]
        )
        dest = tmp_path / "huge"
        door.blob_authorizations.clear()
        result = _pull(world, f"{door.host}/team/huge:v1", dest, "--quiet")
        assert result.returncode == 1
        line = _one_line(result)
        assert "1.0 TiB, more than --max-blob-size 10.0 GiB" in line
        assert door.blob_authorizations == []
        assert not (dest / "index.json").exists()

    def test_the_image_size_limit_is_a_flag(self, world: SidecarWorld, tmp_path: Path) -> None:
        """--max-image-size below the image's size refuses it, naming the flag."""
        dest = tmp_path / "small"
        image = world.via_door(world.images.app)
        result = _pull(world, image, dest, "--quiet", "--max-image-size", "1KiB")
        assert result.returncode == 1
        assert "more than --max-image-size 1.0 KiB" in _one_line(result)
        assert not (dest / "index.json").exists()


class TestCrashLeftovers:
    def test_kill_9_mid_download_then_the_next_pull_leaves_nothing(
        self, world: SidecarWorld, door: FrontDoor, tmp_path: Path
    ) -> None:
        """A pull killed with SIGKILL mid-blob leaves a temp file; the next pull removes it."""
        image = world.seed("team/killed", "v1", [200_000, 200_000])
        door.stall_blobs = True
        dest = tmp_path / "killed"
        argv = [sys.executable, "-m", "pullbroker_sidecar.cli", "pull", world.via_door(image)]
        argv += ["--dest", f"oci:{dest}", "--home", str(world.home), "--quiet"]
        with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
            try:
                assert door.stalled.wait(timeout=30), "the pull never reached a blob"
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
            finally:
                door.release.set()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert list(dest.rglob(".pull-*.tmp")) != [], "SIGKILL should leave a temp file"
        door.stall_blobs = False
        result = _pull_ok(world, world.via_door(image), dest)
        assert result["digest"] == image.digest
        _assert_only_verified_blobs(dest)

    def test_an_old_versions_temp_file_in_blobs_is_removed(
        self, world: SidecarWorld, tmp_path: Path
    ) -> None:
        """A `.pull-*.tmp` in blobs/ (where earlier versions wrote) is gone after a pull."""
        dest = tmp_path / "old"
        _pull_ok(world, world.via_door(world.images.app), dest)
        (dest / "blobs" / ".pull-k9x2z.tmp").write_bytes(b"\0" * 4096)
        _pull_ok(world, world.via_door(world.images.app), dest)
        _assert_only_verified_blobs(dest)
