"""Bodies stream both ways through a real gateway process with bounded memory.

The upload size is ``FEDGATE_BIG_UPLOAD`` bytes (default 256 MiB, so the test stays a few
seconds on two shared cores; 1 GiB was run by hand, see docs/dataplane.md).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.backend import BackendProcess
from tests.support.gateway_proc import GatewayProcess, manifest_yaml

BIG = int(os.environ.get("FEDGATE_BIG_UPLOAD", str(256 * 1024 * 1024)))
RSS_BUDGET = 64 * 1024 * 1024
BLOCK = bytes(range(256)) * 256  # 64 KiB
H = {"host": "shop.test"}


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    with BackendProcess("b1", host="127.0.0.2") as backend:
        manifest = manifest_yaml(
            services=[
                {
                    "name": "shop",
                    "routes": [{"host": "shop.test", "pathPrefix": "/"}],
                    "port": 80,
                    "clusters": ["c1"],
                    "endpoints": {"c1": [backend.address]},
                    "timeouts": {"request": "60s"},
                }
            ]
        )
        settings = {"cluster": "c1", "insecureEastWest": True, "telemetry": {"accessLog": False}}
        with GatewayProcess(settings=settings, manifest=manifest) as gw:
            yield gw


class PeakRss:
    """Samples the gateway's RSS in a thread while a transfer runs."""

    def __init__(self, gw: GatewayProcess) -> None:
        self.gw = gw
        self.base = gw.rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):  # sampling period
            self.peak = max(self.peak, self.gw.rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.base


async def body(total: int, digest: hashlib._Hash) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = BLOCK if total - sent >= len(BLOCK) else BLOCK[: total - sent]
        digest.update(piece)
        sent += len(piece)
        yield piece


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_big_upload_streams_with_bounded_memory(gateway: GatewayProcess) -> None:
    digest = hashlib.sha256()
    async with httpx.AsyncClient(base_url=gateway.url(), timeout=120) as c:
        with PeakRss(gateway) as rss:
            r = await c.post(
                "/upload",
                headers={**H, "content-length": str(BIG)},
                content=body(BIG, digest),
            )
    assert r.status_code == 200
    seen = r.json()
    assert seen["body_length"] == BIG
    assert seen["body_sha256"] == digest.hexdigest()
    assert rss.growth < RSS_BUDGET, f"gateway RSS grew by {rss.growth / 2**20:.1f} MiB"
    print(f"upload {BIG / 2**20:.0f} MiB: gateway RSS growth {rss.growth / 2**20:.1f} MiB")


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_big_chunked_upload_streams(gateway: GatewayProcess) -> None:
    size = BIG // 4
    digest = hashlib.sha256()
    async with httpx.AsyncClient(base_url=gateway.url(), timeout=120) as c:
        with PeakRss(gateway) as rss:
            r = await c.post("/upload", headers=H, content=body(size, digest))  # chunked
    assert r.status_code == 200
    assert r.json()["body_length"] == size
    assert r.json()["body_sha256"] == digest.hexdigest()
    assert rss.growth < RSS_BUDGET


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_big_download_streams_with_bounded_memory(gateway: GatewayProcess) -> None:
    received = 0
    async with httpx.AsyncClient(base_url=gateway.url(), timeout=120) as c:
        with PeakRss(gateway) as rss:
            async with c.stream("GET", f"/download?size={BIG}", headers=H) as r:
                assert r.status_code == 200
                assert r.headers["content-length"] == str(BIG)
                async for chunk in r.aiter_raw():
                    received += len(chunk)
    assert received == BIG
    assert rss.growth < RSS_BUDGET, f"gateway RSS grew by {rss.growth / 2**20:.1f} MiB"
    print(f"download {BIG / 2**20:.0f} MiB: gateway RSS growth {rss.growth / 2**20:.1f} MiB")


async def test_slow_reader_applies_backpressure(gateway: GatewayProcess) -> None:
    """A client that reads slowly: the gateway stops reading the upstream instead of
    buffering the whole answer."""
    size = 64 * 1024 * 1024
    received = 0
    async with httpx.AsyncClient(base_url=gateway.url(), timeout=60) as c:
        with PeakRss(gateway) as rss:
            async with c.stream("GET", f"/download?size={size}", headers=H) as r:
                async for chunk in r.aiter_raw(65536):
                    received += len(chunk)
                    if received < 16 * 1024 * 1024:
                        # a slow start: the first 16 MiB trickle in
                        await _pause()
    assert received == size
    assert rss.growth < RSS_BUDGET // 2


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.001)  # pacing of a slow consumer (the behaviour under test)


async def test_chunked_streaming_answer_is_relayed(gateway: GatewayProcess) -> None:
    async with httpx.AsyncClient(base_url=gateway.url(), timeout=30) as c:
        r = await c.get("/s?stream=200&chunk=5000", headers=H)
    assert r.status_code == 200
    assert r.headers.get("transfer-encoding") == "chunked"
    assert r.content == b"y" * 1_000_000
