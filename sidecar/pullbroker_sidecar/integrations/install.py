"""`pullbroker-sidecar install-helpers DIR`: the node helpers as self-contained executables.

kubelet runs its credential provider, and the docker CLI its credential helper, on the
host, outside any container or virtualenv. Both helpers use the standard library only
(they talk to the daemon over its socket), so each is written as a zipapp of the few
modules it needs, runnable by any `python3` (3.9 or newer) on the node:

    DIR/docker-credential-pullbroker      DIR/pullbroker-credential-provider

The Kubernetes DaemonSet (deploy/kubernetes) runs this in an init container to put the
provider where kubelet's `--image-credential-provider-bin-dir` points. Files are replaced
atomically, so a kubelet or docker running the old one never sees half a file.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import zipfile
from pathlib import Path

import pullbroker_client

import pullbroker_sidecar

HELPERS = {
    "docker-credential-pullbroker": "docker_credential",
    "pullbroker-credential-provider": "kubelet_provider",
}
# (package, module file) pairs every helper needs besides its own module. The client's
# jsonlimits (standard library only) bounds the nesting of the daemon's answers.
_SHARED = (
    (pullbroker_sidecar, "__init__.py"),
    (pullbroker_sidecar, "errors.py"),
    (pullbroker_sidecar, "daemon/__init__.py"),
    (pullbroker_sidecar, "daemon/protocol.py"),
    (pullbroker_sidecar, "integrations/__init__.py"),
    (pullbroker_client, "__init__.py"),
    (pullbroker_client, "jsonlimits.py"),
)
SHEBANG = b"#!/usr/bin/env python3\n"
_EPOCH = (1980, 1, 1, 0, 0, 0)


def build(module: str) -> bytes:
    """The zipapp bytes (shebang included) of one helper module."""
    files = [*_SHARED, (pullbroker_sidecar, f"integrations/{module}.py")]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for package, relative in files:
            root = Path(package.__file__ or "").parent
            info = zipfile.ZipInfo(f"{package.__name__}/{relative}", date_time=_EPOCH)
            archive.writestr(info, (root / relative).read_bytes())
        main = f"import sys\nfrom pullbroker_sidecar.integrations.{module} import main\n"
        main += "sys.exit(main())\n"
        archive.writestr(zipfile.ZipInfo("__main__.py", date_time=_EPOCH), main)
    return SHEBANG + buffer.getvalue()


def install(folder: Path) -> list[Path]:
    """Write every helper into `folder` (0755, atomically); the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, module in HELPERS.items():
        target = folder / name
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{name}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(build(module))
            os.chmod(temp, 0o755)  # noqa: S103 - executables: kubelet and docker run them
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        written.append(target)
    return written


def run_command(args: argparse.Namespace) -> int:
    """`install-helpers DIR`: write them and name what was written."""
    for path in install(Path(args.dir).expanduser().absolute()):
        print(path)
    return 0
