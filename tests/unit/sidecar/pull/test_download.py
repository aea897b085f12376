"""Concurrent verified downloads: refresh on 401, retry on temporary failure, clean abort."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pullbroker_client.registry.errors import AuthenticationRequired
from pullbroker_client.registry.tls import ssl_context
from pullbroker_sidecar.errors import DigestMismatch
from pullbroker_sidecar.pull.download import BlobJob, download_blobs
from pullbroker_sidecar.pull.fetch import BlobFetcher
from pullbroker_sidecar.pull.layout import OciLayout
from pullbroker_sidecar.pull.manifest import Descriptor
from pullbroker_sidecar.pull.progress import NullProgress
from pullbroker_sidecar.tokens import BrokerAuthorizer

from tests.harness.certs import TestCA
from tests.harness.https_server import HTTPSServer, Reply, Request
from tests.unit.sidecar.issuer import FakeClock, StubIssuer


def _blob(data: bytes) -> tuple[Descriptor, str]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return Descriptor("application/octet-stream", digest, len(data)), f"/v2/team/app/blobs/{digest}"


A, A_PATH = _blob(b"a" * 300_000)
B, B_PATH = _blob(b"b" * 1000)


JobFactory = Callable[[StubIssuer], BlobJob]


@pytest.fixture
def make_job(server: HTTPSServer, test_ca: TestCA, tmp_path: Path) -> Iterator[JobFactory]:
    """Jobs against `server` writing to tmp_path/oci; their connections closed after."""
    fetchers: list[BlobFetcher] = []

    def make(issuer: StubIssuer) -> BlobJob:
        # A long read timeout: only abort() can end a stalled read within the test timeout.
        fetcher = BlobFetcher(server.url(), ssl_context(test_ca.pem), timeout=600)
        fetchers.append(fetcher)
        authorizer = BrokerAuthorizer(issuer, "img", clock=issuer.clock)
        layout = OciLayout.open(tmp_path / "oci")
        return BlobJob(fetcher, authorizer, layout, "team/app", NullProgress())

    try:
        yield make
    finally:
        for fetcher in fetchers:
            fetcher.close()


def _leftovers(layout: OciLayout) -> list[Path]:
    return [p for p in layout.blobs_dir.rglob("*") if p.is_file() and p.name.startswith(".")]


class TestDownload:
    async def test_fetches_missing_blobs_only(
        self, server: HTTPSServer, make_job: JobFactory
    ) -> None:
        """Blobs already in the layout are not downloaded again."""
        server.answers[A_PATH] = Reply(body=b"a" * 300_000)
        job = make_job(StubIssuer(FakeClock()))
        job.layout.put_blob(B, b"b" * 1000)
        assert await download_blobs(job, [A, B]) == 1
        assert [s.path for s in server.requests] == [A_PATH]
        assert job.layout.has_blob(A)

    async def test_401_gets_a_forced_token_and_retries(
        self, server: HTTPSServer, make_job: JobFactory
    ) -> None:
        """A blob rejected with 401 is fetched again with a token minted with force_refresh."""

        def route(srv: HTTPSServer, request: Request) -> Reply | None:
            if request.headers.get("authorization") == "Bearer tok-1":
                return Reply(401, body=b'{"errors":[{"code":"UNAUTHORIZED"}]}')
            return None

        server.route = route
        server.answers[A_PATH] = Reply(body=b"a" * 300_000)
        issuer = StubIssuer(FakeClock())
        job = make_job(issuer)
        await download_blobs(job, [A])
        assert [s.headers["authorization"] for s in server.requests] == [
            "Bearer tok-1",
            "Bearer tok-2",
        ]
        assert [c[2] for c in issuer.calls] == [False, True]
        assert job.layout.has_blob(A)

    async def test_second_401_fails(self, server: HTTPSServer, make_job: JobFactory) -> None:
        """A fresh token that is rejected too ends the pull (one refresh per blob)."""
        server.answers[A_PATH] = Reply(401, body=b"{}")
        job = make_job(StubIssuer(FakeClock()))
        with pytest.raises(AuthenticationRequired):
            await download_blobs(job, [A])
        assert len(server.requests) == 2

    async def test_temporary_failure_is_retried_once(
        self, server: HTTPSServer, make_job: JobFactory
    ) -> None:
        """A 503 is retried once and the blob still lands."""
        answers = iter([Reply(503, body=b"busy"), Reply(body=b"b" * 1000)])
        server.route = lambda srv, request: next(answers)
        job = make_job(StubIssuer(FakeClock()))
        await download_blobs(job, [B])
        assert job.layout.has_blob(B)

    async def test_one_failure_aborts_the_others_and_cleans_up(
        self, server: HTTPSServer, make_job: JobFactory
    ) -> None:
        """A corrupt blob stops a download stuck mid-body at once; no temp file remains."""

        def route(srv: HTTPSServer, request: Request) -> Reply | None:
            if request.path == B_PATH:
                srv.stalled.wait(timeout=30)  # fail only once A is half-way through
                return Reply(body=b"X" * 1000)
            return None

        server.route = route
        server.answers[A_PATH] = Reply(body=b"a" * 300_000, stall=True)
        job = make_job(StubIssuer(FakeClock()))
        with pytest.raises(DigestMismatch, match=B.digest):
            await download_blobs(job, [A, B])
        assert server.stalled.is_set()
        assert not job.layout.has_blob(A)
        assert not job.layout.has_blob(B)
        assert _leftovers(job.layout) == []
