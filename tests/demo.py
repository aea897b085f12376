"""`make demo`: the whole story, offline, through the real commands a user types.

1. a private registry (CNCF distribution, TLS + token auth) holding a private image,
2. `pullbroker serve` on a fresh home (dev CA, SQLite, embedded encrypted secret store),
3. `pullbroker registry add ... --password-stdin --test` (the password only on stdin),
4. `pullbroker-sidecar pull IMAGE --dest oci:DIR` with the node certificate,
5. the digest, checked against what was pushed, and a search for the password on disk.

The registry and its token server are the test harness's (tests/harness): they stand in for
Docker Hub/GHCR/Quay/Harbor, which speak the same token protocol but are not reachable here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pullbroker_client.home import Home

from tests.harness.canary import find_in_tree
from tests.harness.standard import (
    ALICE,
    PushedImage,
    add_standard_users,
    seed_image,
    start_standard_registry,
)

BIN = Path(sys.executable).parent


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run(*args: str, stdin: str | None = None) -> str:
    """Run a pullbroker command as a user would, echoing it; stop the demo if it fails."""
    print("$ " + " ".join(args), flush=True)
    result = subprocess.run(
        [str(BIN / args[0]), *args[1:]], input=stdin, capture_output=True, text=True, check=False
    )
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"demo failed at: {' '.join(args)} (exit {result.returncode})")
    return result.stdout


def wait_for_broker(home: Home, broker: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if broker.poll() is not None:
            raise SystemExit("the broker exited during start-up: see its log above")
        if home.broker_json.exists():
            return home.read_address()
        time.sleep(0.1)
    raise SystemExit("the broker did not start within 30 s")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="pullbroker-demo-") as tmp:
        root = Path(tmp)
        step("a private registry with token auth (distribution 2.8 + our token server)")
        registry = start_standard_registry(root / "registry")
        try:
            add_standard_users(registry)
            image = seed_image(registry, root / "layouts", "team/app", "v1", [4096, 65536])
            print(f"pushed {image.reference} -> {image.digest}")
            return demo(root, registry.url, registry.ca_dir / "ca.crt", image, registry.users)
        finally:
            registry.stop()


def demo(root: Path, url: str, registry_ca: Path, image: PushedImage, users: dict[str, str]) -> int:
    home = Home(root / "home")
    step("start the broker on the embedded default (dev CA, SQLite, encrypted local store)")
    # The demo registry listens on 127.0.0.1: a broker refuses loopback registries (SSRF)
    # unless its configuration allows them, as this one does.
    config = root / "broker.yaml"
    config.write_text("allow_loopback_registries: true\n")
    print(f"$ cat {config}\n{config.read_text().strip()}")
    serve = ["serve", "--home", str(home.root), "--config", str(config), "--listen", "127.0.0.1:0"]
    print("$ pullbroker " + " ".join(serve))
    broker = subprocess.Popen(
        [str(BIN / "pullbroker"), *serve],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        print(f"broker listening on {wait_for_broker(home, broker)} (mTLS only)")
        h = ("--home", str(home.root))
        step("register the credential (the password goes on stdin, never the command line)")
        run(
            "pullbroker", "registry", "add", *h, "--name", "demo", "--type", "generic",
            "--url", url, "--username", ALICE, "--password-stdin",
            "--registry-ca", str(registry_ca), "--test",
            stdin=users[ALICE],
        )  # fmt: skip
        run("pullbroker", "registry", "list", *h)
        step("the sidecar pulls with a short-lived token scoped to team/app:pull")
        dest = root / "pulled"
        out = run(
            "pullbroker-sidecar", "pull", image.reference, "--dest", f"oci:{dest}", *h,
            "--output", "json",
        )  # fmt: skip
        pulled = json.loads(out)["digest"]
        step("result")
        print(f"pushed digest: {image.digest}\npulled digest: {pulled}")
        leaked = find_in_tree(home.root, users[ALICE]) + find_in_tree(dest, users[ALICE])
        print(f"files under the home and the image holding the password: {len(leaked)}")
        ok = pulled == image.digest and not leaked
        print("demo " + ("succeeded" if ok else "FAILED"))
        return 0 if ok else 1
    finally:
        broker.terminate()
        broker.wait(timeout=15)


if __name__ == "__main__":
    sys.exit(main())
