"""The Python cost of one fast-path request, without sockets: a load-independent figure.

    .venv/bin/python bench/fastpath.py [--requests 20000] [--no-log] [--opcodes]
        [--per-function] [--vary] [--tree /path/to/other/checkout]

A real gateway (``tests/gateway/harness.py``: metrics and the access log on, tracing off,
the log to /dev/null) is started in-process; one client connection of its public
listener and one pooled upstream connection get in-memory transports, and every request
is the same plain GET fed to the client protocol, answered by nginx's answer fed to the
upstream connection: the request line to the answer written back, callbacks only (what
``bench/proxy.py`` runs under wrk, minus the kernel and the event loop). Like wrk, it
repeats the same request bytes (a read the protocol takes as parsed before); ``--vary``
makes each request differ from the last (its query: 1,000 targets in turn), so every
one is parsed and decided again.

It prints the CPU time per request (thread time, best and median of 7 runs: still moved by
the neighbours on a shared machine) and, with ``--opcodes``, the bytecode instructions,
Python calls and C calls per request, counted by a trace function: the same on a busy
and an idle machine, so two versions compare exactly (``--tree`` imports the gateway from
another checkout). ``--per-function`` lists the instructions per function.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

REQUEST = b"GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n"
ANSWER = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 29 Nov 2026 07:56:53 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 23\r\nConnection: keep-alive\r\n\r\n"
    b"hello from the backend\n"
)


class MemoryTransport:
    """What the protocols touch of a transport; writes are kept (the last few)."""

    def __init__(self, peer: tuple[str, int]) -> None:
        self.out: list[bytes] = []
        self.peer = peer
        self.closing = False

    def write(self, data: bytes) -> None:
        out = self.out
        out.append(data)
        if len(out) > 64:
            del out[:32]

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name in ("peername", "sockname") else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closing = True

    abort = close


def count(one: Any, n: int, per_function: bool) -> None:
    counts = {"op": 0, "call": 0, "c_call": 0}
    per: dict[str, int] = {}

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            counts["op"] += 1
            if per_function:
                code = frame.f_code
                key = code.co_filename.rsplit("/", 2)[-1] + ":" + code.co_name
                per[key] = per.get(key, 0) + 1
        elif event == "call":
            counts["call"] += 1
        return trace

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "c_call":
            counts["c_call"] += 1

    sys.settrace(trace)
    sys.setprofile(profile)
    for _ in range(n):
        one()
    sys.settrace(None)
    sys.setprofile(None)
    if per_function:
        for key, v in sorted(per.items(), key=lambda kv: -kv[1])[:40]:
            print(f"  {v / n:7.1f}  {key}")
    print(
        f"per request: {counts['op'] / n:.0f} bytecode instructions, "
        f"{counts['call'] / n:.0f} Python calls, {counts['c_call'] / n:.0f} C calls"
    )


async def run(args: argparse.Namespace) -> None:
    from gateway.proxy import UpstreamConnection
    from gateway.telemetry import Telemetry
    from tests.gateway.harness import running_gateway, service, view_of

    view = view_of([service("bench", "bench.test")], endpoints={("bench", "c1"): ["127.0.0.9:80"]})
    sink = open(os.devnull, "w")  # noqa: SIM115, ASYNC230 - /dev/null, for the whole run
    telemetry = Telemetry(
        gateway_id="gw", cluster="c1", metrics=True, access_log=not args.no_log,
        tracing=False, log_stream=sink,
    )  # fmt: skip
    async with running_gateway(view, telemetry=telemetry, fast_path=True) as gw:
        gateway = gw.gateway
        server = gateway._servers["public"]
        loop = asyncio.get_running_loop()
        cls = server.config.http_protocol_class
        client = cls(config=server.config, server_state=server.server_state, app_state={},
                     _loop=loop)  # fmt: skip
        client_side = MemoryTransport(("127.0.0.1", 40000))
        client.connection_made(client_side)
        key = ("127.0.0.9", 80, False)
        upstream = UpstreamConnection(key, loop, gateway.pool._live)
        upstream.connection_made(MemoryTransport(("127.0.0.9", 80)))  # type: ignore[arg-type]
        gateway.pool._idle[key] = [upstream]
        gateway.plane.hosts[b"bench.test"] = "bench.test"  # as the first ASGI request would

        requests = [REQUEST]
        if args.vary:
            requests = [REQUEST.replace(b"GET / ", b"GET /?n=%d " % i) for i in range(1000)]
        turn = iter(range(1 << 62))
        n = len(requests)

        def one() -> None:
            client.data_received(requests[next(turn) % n])
            upstream.data_received(ANSWER)

        for _ in range(2000):
            one()
        if not client_side.out or not client_side.out[-1].startswith(b"HTTP/1.1 200"):
            raise SystemExit("the fast path did not answer")
        if gateway.plane.fast_served < 2000:
            raise SystemExit("requests did not take the fast path")
        runs = []
        for _ in range(7):
            t = time.thread_time()
            for _ in range(args.requests):
                one()
            runs.append((time.thread_time() - t) / args.requests * 1e6)
            await asyncio.sleep(0)
        log = "off" if args.no_log else "on"
        print(f"CPU per request (access log {log}): best {min(runs):.2f} us, "
              f"median {statistics.median(runs):.2f} us")  # fmt: skip
        if args.opcodes or args.per_function:
            count(one, 500, args.per_function)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--no-log", action="store_true", help="access log off")
    ap.add_argument("--opcodes", action="store_true", help="count instructions and calls")
    ap.add_argument("--per-function", action="store_true", help="instructions per function")
    ap.add_argument("--vary", action="store_true", help="every request differs from the last")
    ap.add_argument("--tree", type=Path, default=None, help="import the gateway from here")
    args = ap.parse_args()
    sys.path.insert(0, str((args.tree or ROOT).resolve()))
    import uvloop

    uvloop.install()
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
