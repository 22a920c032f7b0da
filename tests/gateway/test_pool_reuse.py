"""Upstream connection reuse across a client's keep-alive requests: the balancer decides
once per request (the fast path's pick is the endpoint dialled when no idle connection
to it exists), and an answer's upstream connection is idle in the pool by the time the
client has the whole answer, on both request paths."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from collections.abc import Set as AbstractSet

import httpx
import pytest
import uvloop

from federation.model import Endpoint
from gateway.balancer import Balancer
from gateway.bodies import RequestBody
from gateway.failures import Reply
from gateway.forward import relay
from gateway.plane import Target
from gateway.transport import Http1Transport, TryRequest
from gateway.types import Message
from gateway.upstream_pool import UpstreamPool
from tests.gateway.harness import running_gateway, service, view_of
from tests.gateway.test_proxy import GENEROUS, H
from tests.support.backend import Backend


@pytest.fixture
def event_loop_policy() -> uvloop.EventLoopPolicy:
    return uvloop.EventLoopPolicy()  # the gateway runs on uvloop in production


@pytest.fixture
async def two() -> AsyncIterator[tuple[Backend, Backend]]:
    async with Backend("b1", host="127.0.0.2") as b1, Backend("b2", host="127.0.0.3") as b2:
        yield b1, b2


class InTurn(Balancer):
    """The real balancer, steered into a strict turn by its own exclusion: the pick of
    each call is known in advance, so the test is no draw of random numbers."""

    def __init__(self) -> None:
        super().__init__()
        self.picks: list[str] = []

    def pick(
        self,
        service: str,
        cluster: str,
        endpoints: Sequence[Endpoint],
        *,
        exclude: AbstractSet[str] = frozenset(),
    ) -> Endpoint | None:
        turn = endpoints[len(self.picks) % len(endpoints)].address
        others = {e.address for e in endpoints if e.address != turn}
        ep = super().pick(service, cluster, endpoints, exclude={*exclude, *others})
        if ep is not None:
            self.picks.append(ep.address)
        return ep


async def test_the_fast_path_pick_is_the_endpoint_dialled(two: tuple[Backend, Backend]) -> None:
    """A keep-alive GET whose picked endpoint has no idle connection goes to that
    endpoint (dialled the ASGI way), not to a second, independent pick: with picks in
    strict turn, every request lands where its pick said, one pick per request, and once
    both endpoints have a connection every GET takes the fast path."""
    b1, b2 = two
    v = view_of(
        [service("shop", "shop.test", retries=GENEROUS)],
        endpoints={("shop", "c1"): [b1.address, b2.address]},
    )
    async with running_gateway(v, fast_path=True) as gw:
        turn = InTurn()
        gw.gateway.plane.balancer = turn
        async with httpx.AsyncClient(base_url=gw.url(), timeout=5) as c:
            rs = [await c.get("/r", headers=H) for _ in range(12)]
        plane = gw.gateway.plane
        answered = [b1.address if r.json()["name"] == "b1" else b2.address for r in rs]
        assert [r.status_code for r in rs] == [200] * 12
        assert answered == turn.picks  # one decision per request, and the one honoured
        assert plane.pool.connects == 2
        assert plane.fast_served == 12 - 2  # all but the two that dialled


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "asgi"])
@pytest.mark.parametrize("query", ["", "?stream=3&chunk=100"], ids=["whole", "streamed"])
async def test_connection_is_idle_once_the_answer_is_received(
    two: tuple[Backend, Backend], fast_path: bool, query: str
) -> None:
    """The upstream connection is back in the pool before the client can send its next
    request: right after each answer is fully read, nothing is in use, so a client that
    asks again at once reuses it (one connection for the whole run)."""
    b1, _ = two
    v = view_of([service("shop", "shop.test")], endpoints={("shop", "c1"): [b1.address]})
    async with (
        running_gateway(v, fast_path=fast_path) as gw,
        httpx.AsyncClient(base_url=gw.url(), timeout=5) as c,
    ):
        pool = gw.gateway.plane.pool
        for i in range(6):
            r = await c.get("/i" + query, headers=H)
            assert r.status_code == 200
            assert pool.idle_count() == 1, f"answer {i}: its upstream connection is not idle"
        assert pool.connects == 1


class SplitUpstream:
    """A keep-alive upstream that sends each answer's head and first chunk, and the rest
    only when told (``go``): an answer the relay streams, never takes whole."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
                await self.go.wait()
                self.go.clear()
                writer.write(b"3\r\ndef\r\n0\r\n\r\n")
        writer.close()

    async def __aenter__(self) -> SplitUpstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.2", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    def target(self) -> Target:
        return Target("c1", f"127.0.0.2:{self.port}", "127.0.0.2", self.port, remote=False)


async def _stay() -> Message:  # a client that stays (the relay's watcher waits on it)
    await asyncio.Event().wait()
    return {"type": "http.disconnect"}


def _get() -> TryRequest:
    loop = asyncio.get_running_loop()
    return TryRequest(
        "GET", b"/s", b"shop.test", [], RequestBody(None, False, None, 5.0), _stay,
        2.0, 5.0, loop.time() + 5,
    )  # fmt: skip


async def test_a_streamed_answer_frees_its_connection_before_the_last_write() -> None:
    """The relay hands a streamed answer's connection back once the upstream has sent it
    all, before the client's last write (which waits as long as a slow client does), and
    not after: at the moment of that write the connection is already idle in the pool."""
    pool = UpstreamPool()
    transport = Http1Transport(pool)
    idle_at_last_write: list[int] = []
    async with SplitUpstream() as up:

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                up.go.set()  # the rest of the answer may come now
            elif not message.get("more_body"):
                idle_at_last_write.append(pool.idle_count())

        try:
            for _ in range(2):
                conn = await transport.send(up.target(), _get())
                assert conn.status == 200 and not conn.complete
                assert await relay(conn, transport, send, _stay, idle=5.0, watch=True) == 6
        finally:
            pool.close()
    assert idle_at_last_write == [1, 1]
    assert pool.connects == 1


async def test_a_client_that_never_takes_the_last_write_is_cut() -> None:
    """The last write of a streamed answer is bounded like every other one (the idle
    limit): a client that stops reading there ends the exchange (499) instead of holding
    it until it closes, and the upstream connection, complete, stays reusable."""
    pool = UpstreamPool()
    transport = Http1Transport(pool)
    async with SplitUpstream() as up:

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                up.go.set()
            elif not message.get("more_body"):
                await asyncio.Event().wait()  # flow control: the client takes nothing more

        try:
            conn = await transport.send(up.target(), _get())
            with pytest.raises(Reply) as cut:
                await asyncio.wait_for(
                    relay(conn, transport, send, _stay, idle=0.2, watch=True), timeout=10
                )
            assert cut.value.status == 499
            assert pool.idle_count() == 1
        finally:
            pool.close()
