"""The image archive (OCI layout + docker manifest.json in one tar) and `--dest` parsing."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from pullbroker_sidecar.errors import InvalidOption
from pullbroker_sidecar.pull.archive import ArchiveImage, write_archive
from pullbroker_sidecar.pull.destinations import (
    ContainerdDestination,
    DockerArchiveDestination,
    DockerDaemonDestination,
    OciDestination,
    parse_destination,
)
from pullbroker_sidecar.pull.manifest import Descriptor


def _blob(folder: Path, data: bytes, media_type: str) -> Descriptor:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (folder / digest.split(":")[1]).write_bytes(data)
    return Descriptor(media_type, digest, len(data))


def _archive(tmp_path: Path, name: str | None) -> tuple[ArchiveImage, tarfile.TarFile]:
    config = _blob(tmp_path, b'{"rootfs":{}}', "application/vnd.oci.image.config.v1+json")
    layer = _blob(tmp_path, b"layer-bytes", "application/vnd.oci.image.layer.v1.tar+gzip")
    manifest = _blob(tmp_path, b'{"manifest":1}', "application/vnd.oci.image.manifest.v1+json")
    image = ArchiveImage(name, "v1" if name else None, manifest, config, (layer, layer))
    out = io.BytesIO()
    write_archive(out, image, lambda d: (tmp_path / d.split(":")[1]).open("rb"))
    out.seek(0)
    return image, tarfile.open(fileobj=out)


def _json(tar: tarfile.TarFile, member: str) -> object:
    extracted = tar.extractfile(member)
    assert extracted is not None
    return json.loads(extracted.read())


class TestArchive:
    def test_holds_an_oci_layout_and_a_docker_manifest(self, tmp_path: Path) -> None:
        """index.json names the image for containerd; manifest.json for docker; blobs once."""
        image, tar = _archive(tmp_path, "r.example:5000/team/app:v1")
        names = tar.getnames()
        assert {"oci-layout", "index.json", "manifest.json"} <= set(names)
        blobs = [n for n in names if n.startswith("blobs/sha256/") and n != "blobs/sha256/"]
        assert len(blobs) == 3  # config, the (repeated) layer once, manifest
        index = _json(tar, "index.json")
        assert isinstance(index, dict)
        annotations = index["manifests"][0]["annotations"]
        assert annotations["io.containerd.image.name"] == "r.example:5000/team/app:v1"
        assert annotations["org.opencontainers.image.ref.name"] == "v1"
        assert index["manifests"][0]["digest"] == image.manifest.digest
        docker = _json(tar, "manifest.json")
        assert docker == [
            {
                "Config": f"blobs/sha256/{image.config.digest.split(':')[1]}",
                "RepoTags": ["r.example:5000/team/app:v1"],
                "Layers": [f"blobs/sha256/{image.layers[0].digest.split(':')[1]}"] * 2,
            }
        ]

    def test_digest_only_image_is_untagged(self, tmp_path: Path) -> None:
        """Without a name: no RepoTags, no containerd name."""
        _, tar = _archive(tmp_path, None)
        docker = _json(tar, "manifest.json")
        assert isinstance(docker, list)
        assert docker[0]["RepoTags"] == []
        index = _json(tar, "index.json")
        assert isinstance(index, dict)
        assert "annotations" not in index["manifests"][0]

    def test_entries_are_deterministic(self, tmp_path: Path) -> None:
        """Every entry is root-owned with mtime 0 (same image, same bytes)."""
        _, tar = _archive(tmp_path, "r/a:v1")
        assert {(m.mtime, m.uid, m.gid) for m in tar.getmembers()} == {(0, 0, 0)}


class TestParseDestination:
    def test_forms(self, tmp_path: Path) -> None:
        """Every accepted form and what it means."""
        assert isinstance(parse_destination(f"oci:{tmp_path}"), OciDestination)
        archive = parse_destination(f"docker-archive:{tmp_path / 'a.tar'}")
        assert isinstance(archive, DockerArchiveDestination)
        assert archive.path == tmp_path / "a.tar"
        daemon = parse_destination("docker-daemon:unix:///run/d.sock")
        assert isinstance(daemon, DockerDaemonDestination)
        assert daemon.host == "unix:///run/d.sock"
        assert isinstance(parse_destination("docker-daemon"), DockerDaemonDestination)
        default = parse_destination("containerd")
        assert isinstance(default, ContainerdDestination)
        assert default.namespace == "k8s.io"
        named = parse_destination("containerd:builds")
        assert isinstance(named, ContainerdDestination)
        assert named.label == "containerd:builds"

    @pytest.mark.parametrize(
        "text", ["some/dir", "oci:", "docker-archive:", "tar:x", "containerd:"]
    )
    def test_other_forms_are_refused_with_the_accepted_ones(self, text: str) -> None:
        """Unknown forms name every accepted one."""
        with pytest.raises(InvalidOption, match="docker-daemon"):
            parse_destination(text)
