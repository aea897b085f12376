"""The OCI layout writer: only verified blobs under final names, index.json merges by ref name."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from pullbroker_client.registry.mediatypes import OCI_MANIFEST
from pullbroker_sidecar.errors import DigestMismatch, LayoutError
from pullbroker_sidecar.pull.layout import OciLayout
from pullbroker_sidecar.pull.manifest import REF_NAME, Descriptor
from pullbroker_sidecar.pull.platform import Platform


def _descriptor(data: bytes, media_type: str = OCI_MANIFEST) -> Descriptor:
    return Descriptor(media_type, "sha256:" + hashlib.sha256(data).hexdigest(), len(data))


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


class TestBlobs:
    def test_commit_renames_into_place(self, tmp_path: Path) -> None:
        """A verified blob is stored at blobs/sha256/<hex> and nothing else is left behind."""
        layout = OciLayout.open(tmp_path / "oci")
        d = _descriptor(b"hello")
        with layout.blob_writer(d) as writer:
            writer.write(b"hel")
            writer.write(memoryview(b"lo"))
            writer.commit()
        assert layout.blob_path(d.digest).read_bytes() == b"hello"
        assert _files(tmp_path / "oci") == ["blobs/sha256/" + d.digest[7:], "oci-layout"]

    def test_mismatch_removes_the_temp_file(self, tmp_path: Path) -> None:
        """Content that hashes differently raises DigestMismatch and leaves no file at all."""
        layout = OciLayout.open(tmp_path / "oci")
        d = _descriptor(b"hello")
        with layout.blob_writer(d) as writer:
            writer.write(b"HELLO")
            with pytest.raises(DigestMismatch) as caught:
                writer.commit()
        assert caught.value.digest == d.digest
        assert caught.value.actual == "sha256:" + hashlib.sha256(b"HELLO").hexdigest()
        assert list(layout.blobs_dir.rglob("*.*")) == []
        assert not layout.has_blob(d)

    def test_oversized_content_fails_before_hashing_more(self, tmp_path: Path) -> None:
        """Bytes past the descriptor's size fail at once (a registry cannot fill the disk)."""
        layout = OciLayout.open(tmp_path / "oci")
        d = _descriptor(b"abc")
        with pytest.raises(DigestMismatch, match="more bytes"), layout.blob_writer(d) as writer:
            writer.write(b"abcd")
        assert _files(layout.blobs_dir) == []

    def test_digest_must_not_be_a_path(self, tmp_path: Path) -> None:
        """A digest that is not hex cannot become a file name (no traversal)."""
        layout = OciLayout.open(tmp_path / "oci")
        with pytest.raises(LayoutError, match="not a digest"):
            layout.blob_path("sha256:../../etc/passwd")

    def test_has_blob_checks_the_size(self, tmp_path: Path) -> None:
        """A stored blob of the right name but wrong size is not taken as present."""
        layout = OciLayout.open(tmp_path / "oci")
        d = _descriptor(b"data")
        layout.put_blob(d, b"data")
        assert layout.has_blob(d)
        assert not layout.has_blob(Descriptor(d.media_type, d.digest, 99))

    def test_a_wrong_file_of_the_right_size_is_not_a_blob(self, tmp_path: Path) -> None:
        """An existing file is trusted only when it hashes to its name; the download replaces it."""
        layout = OciLayout.open(tmp_path / "oci")
        d = _descriptor(b"data")
        layout.blob_path(d.digest).write_bytes(b"DATA")
        assert not layout.has_blob(d)
        layout.put_blob(d, b"data")
        assert layout.blob_path(d.digest).read_bytes() == b"data"

    def test_a_symlink_at_a_digest_path_is_never_followed(self, tmp_path: Path) -> None:
        """A symlink to the right bytes is untrusted; a commit replaces the link, not its target."""
        layout = OciLayout.open(tmp_path / "oci")
        d = _descriptor(b"data")
        outside = tmp_path / "outside"
        outside.write_bytes(b"data")
        layout.blob_path(d.digest).symlink_to(outside)
        assert not layout.has_blob(d)
        with pytest.raises(LayoutError, match="missing"):
            layout.open_blob(d.digest)
        layout.put_blob(d, b"data")
        assert not layout.blob_path(d.digest).is_symlink()
        assert outside.stat().st_mode & 0o777 == 0o644

    def test_blobs_are_read_only(self, tmp_path: Path) -> None:
        """A committed blob is 0444: writing through it takes a deliberate chmod first."""
        layout = OciLayout.open(tmp_path / "oci")
        d = _descriptor(b"data")
        layout.put_blob(d, b"data")
        assert layout.blob_path(d.digest).stat().st_mode & 0o777 == 0o444

    def test_a_symlinked_index_is_refused(self, tmp_path: Path) -> None:
        """index.json as a symlink is neither read nor written through."""
        layout = OciLayout.open(tmp_path / "oci")
        outside = tmp_path / "outside.json"
        outside.write_text('{"manifests": []}')
        (layout.root / "index.json").symlink_to(outside)
        d = _descriptor(b"{}")
        with pytest.raises(LayoutError, match="symbolic link"):
            layout.tag(d, "v1")
        assert outside.read_text() == '{"manifests": []}'


class TestIndex:
    def test_tags_merge_and_replace(self, tmp_path: Path) -> None:
        """A second tag is added beside the first; re-pulling a tag replaces its entry."""
        layout = OciLayout.open(tmp_path / "oci")
        v1, v2, v1b = _descriptor(b"1"), _descriptor(b"2"), _descriptor(b"1b")
        layout.tag(v1, "v1")
        layout.tag(v2, "v2")
        layout.tag(v1b, "v1")
        index = json.loads((tmp_path / "oci/index.json").read_text())
        refs = {m["annotations"][REF_NAME]: m["digest"] for m in index["manifests"]}
        assert refs == {"v1": v1b.digest, "v2": v2.digest}
        assert index["schemaVersion"] == 2

    def test_keeps_foreign_entries(self, tmp_path: Path) -> None:
        """Entries written by other tools (other fields, untagged) survive a tag."""
        root = tmp_path / "oci"
        OciLayout.open(root)
        foreign = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 1}
        (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [foreign]}))
        d = Descriptor(OCI_MANIFEST, "sha256:" + "b" * 64, 2, platform=Platform("linux", "arm64"))
        OciLayout.open(root).tag(d, "v1")
        manifests = json.loads((root / "index.json").read_text())["manifests"]
        assert manifests[0] == foreign
        assert manifests[1]["platform"] == {"architecture": "arm64", "os": "linux"}

    def test_refuses_a_non_empty_directory_that_is_not_a_layout(self, tmp_path: Path) -> None:
        """Pulling into a folder of other files would pollute it: refused with the reason."""
        (tmp_path / "notes.txt").write_text("mine")
        with pytest.raises(LayoutError, match="not an OCI layout"):
            OciLayout.open(tmp_path)

    def test_refuses_a_deeply_nested_index_in_one_line(self, tmp_path: Path) -> None:
        """An index.json nested 100k deep is a LayoutError, not a RecursionError."""
        layout = OciLayout.open(tmp_path / "oci")
        (layout.root / "index.json").write_bytes(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
        with pytest.raises(LayoutError, match="nests deeper"):
            layout.tag(_descriptor(b"{}"), "v1")

    def test_refuses_a_broken_index(self, tmp_path: Path) -> None:
        """An index.json that does not parse is reported, not overwritten."""
        root = tmp_path / "oci"
        layout = OciLayout.open(root)
        (root / "index.json").write_text("{")
        with pytest.raises(LayoutError, match=r"index\.json"):
            layout.tag(_descriptor(b"x"), "v1")
        assert (root / "index.json").read_text() == "{"
