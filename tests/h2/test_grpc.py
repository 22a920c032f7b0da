"""gRPC through one and two real gateways: real ``grpcio`` servers and clients.

Unary, server streaming, client streaming and bidirectional calls with trailers; the
gateway honouring ``grpc-timeout``; retries decided on ``grpc-status``; gateway errors
as gRPC statuses; failover of a gRPC service to another cluster with 0 failed calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, TypeVar

import grpc
import httpx
import pytest

from federation.model import Access, GatewayRecord, RateLimit, Retries, Timeouts
from tests.gateway.harness import cluster, running_gateway, service, settings_for, view_of
from tests.h2.grpc_support import (
    EchoServer,
    bidi,
    channel,
    client_stream,
    server_stream,
    unary,
)
from tests.support.ports import free_port

T = TypeVar("T")
pytestmark = pytest.mark.timeout(60)


async def in_thread(fn: Callable[[], T]) -> T:
    """grpcio's blocking client, off the event loop that runs the gateway."""
    return await asyncio.to_thread(fn)


def code_of(fn: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def echo(**kw: Any) -> Any:
    return service("echo", "echo.test", protocol="grpc", **kw)


async def test_unary_streams_and_trailers_through_one_gateway() -> None:
    with EchoServer("b1") as b:
        view = view_of([echo()], endpoints={("echo", "c1"): [b.address]})
        async with running_gateway(view) as gw:
            h, p = gw.addr()
            ch = channel(f"{h}:{p}")

            def calls() -> list[Any]:
                reply, call = unary(ch).with_call(b"hi", timeout=10)
                return [
                    reply,
                    dict(call.trailing_metadata()),
                    list(server_stream(ch)(b"4", timeout=10)),
                    client_stream(ch)(iter([b"a", b"b", b"c"]), timeout=10),
                    list(bidi(ch)(iter([b"x", b"y", b"z"]), timeout=10)),
                ]

            reply, trailers, streamed, gathered, pairs = await in_thread(calls)
            ch.close()
    assert reply == b"b1:hi"
    assert trailers["x-served-by"] == "b1"  # upstream trailers reach the client
    assert streamed == [b"b1:0", b"b1:1", b"b1:2", b"b1:3"]
    assert gathered == b"b1:a+b+c"
    assert pairs == [b"b1:x", b"b1:y", b"b1:z"]


async def test_bidirectional_stream_is_interactive() -> None:
    """Each reply arrives before the next request is sent (no buffering either way)."""
    with EchoServer("b1") as b:
        view = view_of([echo()], endpoints={("echo", "c1"): [b.address]})
        async with running_gateway(view) as gw:
            h, p = gw.addr()
            ch = channel(f"{h}:{p}")

            def ping_pong() -> list[bytes]:
                import queue

                q: queue.Queue[bytes | None] = queue.Queue()
                q.put(b"0")

                def requests() -> Any:
                    while (item := q.get(timeout=10)) is not None:
                        yield item

                out = []
                for reply in bidi(ch)(requests(), timeout=10):
                    out.append(reply)
                    q.put(str(len(out)).encode() if len(out) < 5 else None)
                return out

            got = await in_thread(ping_pong)
            ch.close()
    assert got == [b"b1:%d" % i for i in range(5)]


async def test_grpc_timeout_is_the_deadline() -> None:
    """The gateway ends the call at the client's grpc-timeout with DEADLINE_EXCEEDED
    (asked with a raw HTTP/2 client, which has no deadline of its own)."""
    with EchoServer("b1") as b:
        view = view_of([echo()], endpoints={("echo", "c1"): [b.address]})
        async with (
            running_gateway(view) as gw,
            httpx.AsyncClient(http1=False, http2=True, timeout=10) as c,
        ):
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            r = await c.post(
                gw.url() + "/test.Echo/Slow",
                headers={"host": "echo.test", "content-type": "application/grpc",
                         "te": "trailers", "grpc-timeout": "300m"},
                content=b"\x00\x00\x00\x00\x015",  # one message: "5" (seconds)
            )  # fmt: skip
            took = loop.time() - t0
    assert r.status_code == 200
    assert r.headers["grpc-status"] == "4"  # DEADLINE_EXCEEDED, trailers-only
    assert 0.25 < took < 3.0


async def test_retry_on_grpc_status_unavailable_not_on_others() -> None:
    with EchoServer("b1") as bad, EchoServer("b2") as good:
        bad.fail_with = grpc.StatusCode.UNAVAILABLE
        view = view_of(
            [echo(retries=Retries(attempts=2, budget_percent=100))],
            endpoints={("echo", "c1"): [bad.address, good.address]},
        )
        async with running_gateway(view) as gw:
            h, p = gw.addr()
            ch = channel(f"{h}:{p}")
            replies = await in_thread(lambda: [unary(ch)(b"%d" % i, timeout=10) for i in range(8)])
            served_bad = bad.calls
            bad.fail_with = grpc.StatusCode.INTERNAL  # not in retries.grpcStatus
            good.fail_with = grpc.StatusCode.INTERNAL
            internal = await in_thread(lambda: code_of(lambda: unary(ch)(b"x", timeout=10)))
            ch.close()
    assert all(r.startswith(b"b2:") for r in replies)  # 0 failed calls
    assert served_bad >= 1  # some calls did hit the failing backend and were retried
    assert internal[0] == grpc.StatusCode.INTERNAL
    assert bad.calls + good.calls == served_bad + 8 + 1  # INTERNAL: one try, no retry


async def test_gateway_errors_are_grpc_statuses() -> None:
    with EchoServer("b1") as b:
        view = view_of(
            [
                echo(),
                service("lonely", "lonely.test", protocol="grpc"),
                service(
                    "private",
                    "private.test",
                    protocol="grpc",
                    access=Access(spiffe_ids=frozenset({"spiffe://x/y"})),
                ),
                service(
                    "limited",
                    "limited.test",
                    protocol="grpc",
                    rate_limit=RateLimit(average=0.001, burst=1),
                ),
                service("slow", "slow.test", protocol="grpc", timeouts=Timeouts(request=0.3)),
            ],
            endpoints={
                ("echo", "c1"): [b.address],
                ("private", "c1"): [b.address],
                ("limited", "c1"): [b.address],
                ("slow", "c1"): [b.address],
            },
        )
        async with running_gateway(view) as gw:
            h, p = gw.addr()

            def call(authority: str, method: str = "Unary", body: bytes = b"x") -> Any:
                ch = channel(f"{h}:{p}", authority)
                try:
                    return code_of(lambda: unary(ch, method)(body, timeout=10))
                finally:
                    ch.close()

            def all_calls() -> dict[str, Any]:
                call("limited.test")  # takes the only token
                return {
                    "route": call("nowhere.test"),
                    "upstream": call("lonely.test"),
                    "policy": call("private.test"),
                    "limit": call("limited.test"),
                    "timeout": call("slow.test", "Slow", b"3"),
                }

            got = await in_thread(all_calls)
    assert got["route"][0] == grpc.StatusCode.UNIMPLEMENTED
    assert got["upstream"][0] == grpc.StatusCode.UNAVAILABLE
    assert got["policy"][0] == grpc.StatusCode.PERMISSION_DENIED
    assert got["limit"][0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert got["timeout"][0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert all(details for _, details in got.values())  # the reason, not an HTML page


async def test_failover_to_another_cluster_with_zero_failed_calls() -> None:
    """c1's only backend dies mid-run; calls through c1's gateway go on to c2's gateway
    (east-west, HTTP/2) without a single failed call."""
    ew1, ew2 = free_port("127.0.0.5"), free_port("127.0.0.6")
    clusters = [
        cluster("c1", east_west=f"http://127.0.0.5:{ew1}"),
        cluster("c2", east_west=f"http://127.0.0.6:{ew2}"),
    ]
    s1 = settings_for("c1", host="127.0.0.5").model_copy(
        update={"listen": settings_for("c1").listen.model_copy(
            update={"public": "127.0.0.5:0", "east_west": f"127.0.0.5:{ew1}"})}
    )  # fmt: skip
    s2 = settings_for("c2", host="127.0.0.6").model_copy(
        update={"listen": settings_for("c2").listen.model_copy(
            update={"public": "127.0.0.6:0", "east_west": f"127.0.0.6:{ew2}"})}
    )  # fmt: skip
    b1 = EchoServer("b1", host="127.0.0.2").__enter__()
    with EchoServer("b2", host="127.0.0.3") as b2:
        try:
            view = view_of(
                [echo(clusters=("c1", "c2"), retries=Retries(attempts=2, budget_percent=100))],
                clusters,
                endpoints={("echo", "c1"): [b1.address], ("echo", "c2"): [b2.address]},
            )
            async with running_gateway(view, settings=s1) as g1, running_gateway(view, settings=s2):
                h, p = g1.addr()
                ch = channel(f"{h}:{p}")

                def run(n: int) -> list[tuple[grpc.StatusCode, bytes]]:
                    out = []
                    for i in range(n):
                        try:
                            out.append((grpc.StatusCode.OK, unary(ch)(b"%d" % i, timeout=10)))
                        except grpc.RpcError as exc:
                            out.append((exc.code(), (exc.details() or "").encode()))
                    return out

                before = await in_thread(lambda: run(10))
                b1.__exit__(None, None, None)  # the local region dies
                after = await in_thread(lambda: run(30))
                streamed = await in_thread(lambda: list(server_stream(ch)(b"3", timeout=10)))
                ch.close()
        finally:
            b1.__exit__(None, None, None)
    assert [r for r in before if r[0] != grpc.StatusCode.OK] == []
    assert all(r[1].startswith(b"b1:") for r in before)  # local first
    assert [r for r in after if r[0] != grpc.StatusCode.OK] == []  # 0 failed calls
    assert all(r[1].startswith(b"b2:") for r in after)
    assert streamed == [b"b2:0", b"b2:1", b"b2:2"]


@pytest.mark.parametrize(
    ("server_id", "reached"),
    [("spiffe://t/cluster/c2/gateway", True), ("spiffe://t/cluster/c1/gateway", False)],
    ids=["genuine", "wrong-cluster"],
)
async def test_grpc_hop_over_mutual_tls(server_id: str, reached: bool) -> None:
    """The east-west hop of a gRPC call over mutual TLS: the client context offers only
    http/1.1 by ALPN, the HTTP/2 preface is recognised on the TLS connection, trailers
    cross both gateways. The HTTP/2 upstream checks the server's identity as the
    HTTP/1.1 one does: a server that is not a gateway of the cluster dialled gets no
    call (UNAVAILABLE, the backend never reached)."""
    from tests.gateway.test_proxy_mtls import Ca, contexts

    ca = Ca()
    ew1, ew2 = free_port("127.0.0.5"), free_port("127.0.0.6")
    clusters = [
        cluster("c1", east_west=f"https://127.0.0.5:{ew1}"),
        cluster("c2", east_west=f"https://127.0.0.6:{ew2}"),
    ]

    def s(name: str, host: str, ew: int) -> Any:
        return settings_for(name, host=host, insecureEastWest=False).model_copy(
            update={"listen": settings_for(name).listen.model_copy(
                update={"public": f"{host}:0", "east_west": f"{host}:{ew}"})}
        )  # fmt: skip

    with EchoServer("b2", host="127.0.0.3") as b2:
        view = view_of([echo(clusters=("c1", "c2"))], clusters,
                       endpoints={("echo", "c2"): [b2.address]})  # fmt: skip
        records = {"g2": GatewayRecord(id="g2", cluster="c2")}  # c2 has a live gateway
        view = dataclasses.replace(view, gateways=MappingProxyType(records))
        async with (
            running_gateway(view, settings=s("c1", "127.0.0.5", ew1),
                            tls=contexts(ca, "spiffe://t/cluster/c1/gateway")) as g1,
            running_gateway(view, settings=s("c2", "127.0.0.6", ew2),
                            tls=contexts(ca, server_id)),
        ):  # fmt: skip
            h, p = g1.addr()
            ch = channel(f"{h}:{p}")

            def calls() -> Any:
                reply, call = unary(ch).with_call(b"tls", timeout=10)
                return (
                    reply,
                    dict(call.trailing_metadata()),
                    list(bidi(ch)(iter([b"a"]), timeout=10)),
                )

            if not reached:
                with pytest.raises(grpc.RpcError) as refused:
                    await in_thread(calls)
                ch.close()
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                assert b2.calls == 0
                return
            reply, trailers, pairs = await in_thread(calls)
            ch.close()
    assert reply == b"b2:tls"
    assert trailers["x-served-by"] == "b2"
    assert pairs == [b"b2:a"]


async def test_a_cancelled_stream_is_cancelled_upstream() -> None:
    """The client cancels an endless server stream: the gateway resets the upstream
    stream (the backend sees its call end) instead of relaying into the void."""
    with EchoServer("b1") as b:
        view = view_of([echo()], endpoints={("echo", "c1"): [b.address]})
        async with running_gateway(view) as gw:
            h, p = gw.addr()
            ch = channel(f"{h}:{p}")

            def take_three() -> list[bytes]:
                call = ch.unary_stream("/test.Echo/Forever")(b"", timeout=20)
                got = [next(call) for _ in range(3)]
                call.cancel()
                return got

            got = await in_thread(take_three)
            ended = await in_thread(lambda: b.forever_ended.wait(timeout=10))
            ch.close()
    assert got == [b"0", b"1", b"2"]
    assert ended


async def test_an_early_answer_closes_the_upstream_stream() -> None:
    """The backend answers (UNIMPLEMENTED) while the client is still streaming: no
    upstream stream stays open against the backend's concurrent-stream limit. (grpcio
    resets its side after such an answer; ``H2Stream.release`` also resets ours for a
    server that does not.)"""
    import threading

    with EchoServer("b1") as b:
        view = view_of([echo()], endpoints={("echo", "c1"): [b.address]})
        async with running_gateway(view) as gw:
            h, p = gw.addr()
            ch = channel(f"{h}:{p}")
            stop = threading.Event()

            def endless() -> Any:
                yield b"first"
                stop.wait(5)  # the client keeps its side open

            def calls() -> list[grpc.StatusCode]:
                nope = ch.stream_unary("/test.Echo/Nope")
                return [code_of(lambda: nope(endless(), timeout=10))[0] for _ in range(3)]

            codes = await in_thread(calls)
            stop.set()
            pool = gw.gateway.plane.h2_pool
            conns = [c for cs in pool._conns.values() for c in cs]
            still_open = sum(c.h2.open_outbound_streams for c in conns)
            ch.close()
    assert codes == [grpc.StatusCode.UNIMPLEMENTED] * 3
    assert conns and still_open == 0
