"""Graceful drain on SIGTERM, under load: no request in flight fails."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.gateway.harness import running_gateway, service, view_of
from tests.support.backend import Backend, BackendProcess
from tests.support.gateway_proc import GatewayProcess, manifest_yaml
from tests.support.wait import async_wait_for


@pytest.fixture
def backend() -> Iterator[BackendProcess]:
    with BackendProcess("b1", host="127.0.0.2") as b:
        yield b


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_sigterm_under_load_fails_no_request(backend: BackendProcess) -> None:
    manifest = manifest_yaml(
        services=[
            {
                "name": "shop",
                "routes": [{"host": "shop.test", "pathPrefix": "/"}],
                "port": 80,
                "clusters": ["c1"],
                "endpoints": {"c1": [backend.address]},
            }
        ]
    )
    settings = {
        "cluster": "c1",
        "insecureEastWest": True,
        "telemetry": {"accessLog": False},
        "limits": {"drainTimeout": "10s"},
    }
    gw = GatewayProcess(settings=settings, manifest=manifest).start()
    ok = 0
    refused = 0  # a new connection after the listener closed: not a request in flight
    failures: list[str] = []
    answered_after_term = 0
    term_at: float | None = None
    stop_at = time.monotonic() + 30

    async def worker(i: int) -> None:
        nonlocal ok, refused, answered_after_term
        async with httpx.AsyncClient(base_url=gw.url(), timeout=20) as c:
            n = 0
            while time.monotonic() < stop_at:
                n += 1
                try:
                    if i % 3 == 0:
                        r = await c.post("/p?sleep=0.2", headers={"host": "shop.test"},
                                         content=b"z" * 100_000)  # fmt: skip
                    elif i == 1 and n == 1:
                        r = await c.get("/long?sleep=1.5", headers={"host": "shop.test"})
                    else:
                        r = await c.get("/g?sleep=0.1", headers={"host": "shop.test"})
                except httpx.ConnectError:
                    refused += 1
                    return
                except httpx.HTTPError as exc:
                    failures.append(f"worker {i}: {exc!r}")
                    return
                if r.status_code != 200:
                    failures.append(f"worker {i}: status {r.status_code}")
                    return
                ok += 1
                if term_at is not None:
                    answered_after_term += 1

    try:
        tasks = [asyncio.create_task(worker(i)) for i in range(24)]
        await async_wait_for(lambda: ok >= 40, timeout=30, what="load running")
        term_at = time.monotonic()
        gw.terminate()
        await asyncio.gather(*tasks)
        code = await asyncio.to_thread(gw.wait, 20)
        drained_in = time.monotonic() - term_at
    finally:
        gw.stop()
    assert not failures, failures
    assert code == 0
    assert answered_after_term >= 10  # requests in flight at SIGTERM were answered
    assert refused >= 1  # and the listener stopped accepting
    assert drained_in < 10
    assert "Traceback" not in gw.log()


async def test_drain_closes_idle_connections_and_finishes_in_flight() -> None:
    async with Backend("b1", host="127.0.0.2") as b1:
        v = view_of([service("shop", "shop.test")], endpoints={("shop", "c1"): [b1.address]})
        async with running_gateway(v) as g:
            h, p = g.addr()
            idle_r, idle_w = await asyncio.open_connection(h, p)
            async with httpx.AsyncClient(base_url=g.url(), timeout=10) as c:
                slow = asyncio.create_task(c.get("/?sleep=0.5", headers={"host": "shop.test"}))
                await async_wait_for(lambda: b1.requests >= 1, timeout=5, what="in flight")
                drain = asyncio.create_task(g.gateway.drain(5.0))
                r = await slow
                await drain
            assert r.status_code == 200
            assert r.headers.get("connection") == "close"
            assert await asyncio.wait_for(idle_r.read(), 5) == b""  # closed, no answer
            idle_w.close()
            assert g.gateway.bound == {}
            with pytest.raises(OSError):
                await asyncio.open_connection(h, p)
