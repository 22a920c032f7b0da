"""One endpoint of a cluster stops answering (SIGSTOP), with the gateway's DEFAULT settings.

Used by ``bench/failover.py --faults endpoint-get,endpoint-post`` (issue 12's rows): one
``fedgate serve`` process, one cluster with three backend processes (a counting backend
defined here: it appends the ``x-request-id`` of every request it executes to a file),
no ``retries`` or ``timeouts`` in the manifest. Paced load over keep-alive connections:
``--window`` seconds before the fault (the baseline), ``--window`` seconds with one backend
SIGSTOPped (the kernel still accepts connections, nobody answers), then SIGCONT and a
settle period. Reported: failed requests (non-2xx or no answer within 15 s), the p99
latency before and during the fault (the added p99), and for POSTs how many were
executed more than once (every backend's execution log, after SIGCONT).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from federation.devstack.ports import free_port

HOST = "127.0.0.1"
BACKEND_HOSTS = ("127.0.0.51", "127.0.0.52", "127.0.0.53")

BACKEND = r"""
import asyncio, sys
host, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = open(log, "a", buffering=1)
async def handle(r, w):
    try:
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            rid, length = b"-", 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"x-request-id":
                    rid = value.strip()
                elif name == b"content-length":
                    length = int(value)
            if length:
                await r.readexactly(length)
            out.write(rid.decode() + "\n")
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
            await w.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        w.close()
async def main():
    server = await asyncio.start_server(handle, host, port, backlog=1024)
    print("ready", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


@dataclass
class EndpointDrill:
    method: str
    requests: int
    failed: int
    p99_before: float  # seconds
    p99_during: float
    executed_twice: int
    statuses: dict[int, int]

    @property
    def added_p99(self) -> float:
        return self.p99_during - self.p99_before


def _p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]


class _Client:
    """Paced requests over a pool of keep-alive connections, one request per connection
    at a time; each result is (sent at, latency or None, status)."""

    def __init__(self, port: int, method: str, rate: float) -> None:
        self.port = port
        self.method = method
        self.rate = rate
        self.results: list[tuple[float, float | None, int]] = []
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._n = 0

    async def run(self, seconds: float) -> None:
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < seconds:
            i += 1
            t = asyncio.ensure_future(self._one())
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
            await asyncio.sleep(max(0.0, start + i / self.rate - time.monotonic()))  # pacing

    async def finish(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for _, w in self._idle:
            w.close()

    async def _one(self) -> None:
        self._n += 1
        rid = f"{self.method.lower()}-{os.getpid()}-{self._n}"
        body = b"x" * 100 if self.method == "POST" else b""
        req = (
            f"{self.method} /drill HTTP/1.1\r\nhost: drill.test\r\nx-request-id: {rid}\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode() + body
        sent = time.monotonic()
        status = 0
        try:
            async with asyncio.timeout(15.0):
                if self._idle:
                    r, w = self._idle.pop()
                else:
                    r, w = await asyncio.open_connection(HOST, self.port)
                w.write(req)
                head = await r.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await r.readexactly(length)
                if b"connection: close" in head.lower():
                    w.close()
                else:
                    self._idle.append((r, w))
            self.results.append((sent, time.monotonic() - sent, status))
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            self.results.append((sent, None, status))


def _start(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - handed to the child
    env = {**os.environ, **(env or {})}
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    out.close()
    return p


def _stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGCONT)
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


async def _wait_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, w = await asyncio.open_connection(host, port)
            w.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)  # start-up poll under a deadline


async def drill(
    method: str, *, rate: float, window: float, base: str | None = None
) -> EndpointDrill:
    """``base``: run the gateway from another checkout (an absolute path), for an A/B."""
    tmp = Path(tempfile.mkdtemp(prefix="fedgate-endpoint-drill-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        backends = []
        for i, host in enumerate(BACKEND_HOSTS):
            port = free_port(host)
            p = _start([sys.executable, "-c", BACKEND, host, str(port), str(tmp / f"b{i}.ids")],
                       tmp / f"b{i}.log")  # fmt: skip
            procs.append(p)
            backends.append((p, f"{host}:{port}"))
        for _, addr in backends:
            h, _, port_s = addr.rpartition(":")
            await _wait_port(h, int(port_s))
        eps = ", ".join(f'"{a}"' for _, a in backends)
        (tmp / "manifest.yaml").write_text(f"""
apiVersion: fedgate/v1
kind: Federation
metadata: {{name: drill}}
clusters:
  - {{name: c1, region: r1, cloud: other, environment: bench,
     gateway: {{eastWest: "http://127.0.0.1:9"}}}}
services:
  - name: drill
    routes: [{{host: drill.test, pathPrefix: /}}]
    port: 80
    clusters: [c1]
    endpoints: {{c1: [{eps}]}}
""")  # default retries, timeouts, breaker, budget
        port = free_port(HOST)
        (tmp / "gateway.yaml").write_text(f"""
cluster: c1
listen: {{public: "{HOST}:{port}", eastWest: null, admin: "{HOST}:{free_port(HOST)}"}}
manifest: {tmp / "manifest.yaml"}
telemetry: {{accessLog: false, metrics: true, tracing: {{enabled: false}}}}
""")
        # the tree's packages first (``-c`` puts the working directory on sys.path)
        cli = f"import sys; sys.path.insert(0, {base!r}); " if base is not None else ""
        cli += "from federation.cli import main; sys.exit(main())"
        cmd = [sys.executable, "-c", "import sys; " + cli, "serve", "--config",
               str(tmp / "gateway.yaml")]  # fmt: skip
        procs.append(_start(cmd, tmp / "gateway.log"))
        await _wait_port(HOST, port)
        client = _Client(port, method, rate)
        warm = _Client(port, "GET", rate)
        await warm.run(2.0)  # latency history for every endpoint
        await warm.finish()
        t_before = time.monotonic()
        await client.run(window)
        t_fault = time.monotonic()
        stopped = backends[0][0]
        os.killpg(stopped.pid, signal.SIGSTOP)
        await client.run(window)
        t_end = time.monotonic()
        os.killpg(stopped.pid, signal.SIGCONT)
        await client.run(1.0)
        await client.finish()
        await asyncio.sleep(1.0)  # the resumed backend works through what it had queued
        before = [lat for s, lat, _ in client.results if t_before <= s < t_fault and lat]
        during = [lat for s, lat, _ in client.results if t_fault <= s < t_end and lat]
        statuses: dict[int, int] = {}
        for _, _, st in client.results:
            statuses[st] = statuses.get(st, 0) + 1
        failed = sum(1 for _, lat, st in client.results if lat is None or not 200 <= st < 300)
        seen: dict[str, int] = {}
        for i in range(len(BACKEND_HOSTS)):
            f = tmp / f"b{i}.ids"
            for line in f.read_text().splitlines() if f.exists() else ():
                if line.startswith(method.lower()):
                    seen[line] = seen.get(line, 0) + 1
        twice = sum(1 for n in seen.values() if n > 1)  # meaningful for POSTs
        return EndpointDrill(method, len(client.results), failed, _p99(before), _p99(during),
                             twice, statuses)  # fmt: skip
    finally:
        for p in reversed(procs):
            _stop(p)
