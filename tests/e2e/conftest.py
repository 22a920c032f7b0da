"""A federation for failover drills: etcd, backends and one gateway process per cluster.

Three "regions" on distinct loopback addresses (two clouds at tier 0, one on-prem site at
tier 1), each with its backends and its ``fedgate serve`` process, built on
``federation.devstack.localfed.LocalFederation``. On top of it:

* :class:`Load`: paced HTTP/1.1 GETs over keep-alive connections (open loop: a slow
  answer does not slow the sender), one :class:`Result` per request with the cluster
  that served it (the backends' ``x-served-by`` header);
* faults: SIGKILL or SIGSTOP (a blackhole: the kernel still accepts connections, nobody
  answers) of a region's backends or of its gateway, and their undoing;
* :func:`analyse`: failed requests and the time from a fault until every 250 ms window
  has at least 99% of its requests answered by healthy clusters.

``bench/failover.py`` uses the same pieces.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from federation.devstack.localfed import DEMO_HOST, ClusterSpec, LocalFederation

AWS, GCP, ONPREM = "aws-eu-west-1", "gcp-europe-west4", "onprem-fra1"
TOPOLOGY: tuple[ClusterSpec, ...] = (
    ClusterSpec(AWS, "aws", "eu-west-1", 0, "127.0.0.31"),
    ClusterSpec(GCP, "gcp", "europe-west4", 0, "127.0.0.32"),
    ClusterSpec(ONPREM, "onprem", "fra1", 1, "127.0.0.33"),
)
PER_TRY_TIMEOUT = 0.5
FAILBACK_WINDOW = 3.0
WINDOW = 0.25  # seconds per analysis window


# ----------------------------------------------------------------------------- federation


@dataclass
class FailoverFederation(LocalFederation):
    """LocalFederation with a failover-drill manifest and fault helpers."""

    topology: tuple[ClusterSpec, ...] = TOPOLOGY
    use_vault: bool = False
    lease_ttl: float = 2.0
    health_interval: str = "250ms"
    per_try_timeout: float = PER_TRY_TIMEOUT
    failback_window: float = FAILBACK_WINDOW
    # a prefix of its own: the demo's tests look for leftovers named fedgate-demo-*
    base_dir: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="fedgate-failover-"))
    )

    def manifest(self) -> dict[str, Any]:
        m = super().manifest()
        svc = m["services"][0]
        svc["failover"] = {"policy": "healthiest", "failbackWindow": f"{self.failback_window}s"}
        svc["retries"] = {
            # 4 tries: two local endpoints, then one per other cluster (two tier-0
            # regions dying at the same instant still leave a try for the on-prem site)
            "attempts": 3,
            "perTryTimeout": f"{int(self.per_try_timeout * 1000)}ms",
            "budgetPercent": 100,
            "on": ["connect-failure", "reset", "timeout", "502", "503", "504"],
        }
        svc["timeouts"] = {"connect": "250ms", "request": "5s"}
        return m

    # -- addresses
    def entry(self, cluster: str) -> tuple[str, int]:
        gw = self.gateways[cluster]
        return gw.cluster.address, gw.public

    # -- faults
    def signal_backends(self, cluster: str, sig: int) -> None:
        for proc in self.backends[cluster]:
            proc.signal(sig)

    def pause_backends(self, cluster: str) -> None:
        """Blackhole the region's backends: connections are accepted, nothing answers."""
        self.signal_backends(cluster, signal.SIGSTOP)

    def resume_backends(self, cluster: str) -> None:
        self.signal_backends(cluster, signal.SIGCONT)

    def pause_gateway(self, cluster: str) -> None:
        self.gateways[cluster].proc.signal(signal.SIGSTOP)

    def resume_gateway(self, cluster: str) -> None:
        self.gateways[cluster].proc.signal(signal.SIGCONT)

    def close(self) -> None:
        # a stopped process cannot act on SIGTERM: wake everything first
        for gw in self.gateways.values():
            gw.proc.signal(signal.SIGCONT)
        for procs in self.backends.values():
            for proc in procs:
                proc.signal(signal.SIGCONT)
        super().close()

    # -- admin API
    def explain(self, cluster: str) -> dict[str, Any]:
        q = urllib.parse.urlencode({"host": DEMO_HOST, "path": "/"})
        result: dict[str, Any] = self.admin_get(cluster, f"/v1/routes/explain?{q}", timeout=2.0)
        return result

    def shares(self, cluster: str) -> dict[str, float]:
        """Share of first tries per candidate cluster, as the gateway of ``cluster`` plans."""
        return {
            str(c["cluster"]): float(c.get("share", 1.0 if c.get("chosen") else 0.0))
            for c in self.explain(cluster).get("candidates", [])
        }

    def global_health(self, cluster: str) -> dict[str, Any]:
        result: dict[str, Any] = self.admin_get(cluster, "/v1/health/global")
        return result


@pytest.fixture
def federation() -> Iterator[FailoverFederation]:
    with FailoverFederation() as fed:
        yield fed


# ----------------------------------------------------------------------------- load


@dataclass(slots=True)
class Result:
    sent: float  # monotonic seconds
    done: float
    status: int  # 0: no HTTP answer (connect failure, reset, timeout)
    cluster: str  # who served it ("" when failed)
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def latency(self) -> float:
        return self.done - self.sent


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class Load:
    """Paced GETs at ``rate`` per second over keep-alive connections to one entry point."""

    def __init__(
        self,
        entry: tuple[str, int],
        *,
        host: str = DEMO_HOST,
        rate: float = 150.0,
        timeout: float = 5.0,
        max_idle: int = 64,
        path: str = "/drill",
    ) -> None:
        self.entry = entry
        self.host = host.encode()
        self.rate = rate
        self.timeout = timeout
        self.max_idle = max_idle
        self.path = path.encode()
        self.results: list[Result] = []
        self._idle: list[_Conn] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._pending: dict[int, float] = {}

    # -- life cycle
    def start(self) -> Load:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> list[Result]:
        self._stop.set()
        if self._task is not None:
            await self._task
        return self.results

    async def run_for(self, seconds: float) -> list[Result]:
        self.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)  # the load's duration
        return await self.stop()

    async def __aenter__(self) -> Load:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- sending
    async def _run(self) -> None:
        interval = 1.0 / self.rate
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self._stop.is_set():
            now = loop.time()
            while next_at <= now:
                task = asyncio.create_task(self._one())
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
                next_at += interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.001, next_at - loop.time()))
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=self.timeout + 1)
        for conn in self._idle:
            conn.close()
        self._idle.clear()

    def settled(self, before: float) -> bool:
        """Whether every request sent before ``before`` has its result."""
        return all(t >= before for t in self._pending.values())

    async def _one(self) -> None:
        sent = time.monotonic()
        token = object()
        self._pending[id(token)] = sent
        try:
            await self._request(sent)
        finally:
            del self._pending[id(token)]

    async def _request(self, sent: float) -> None:
        conn: _Conn | None = None
        try:
            async with asyncio.timeout(self.timeout):
                if self._idle:
                    conn = self._idle.pop()
                else:
                    conn = _Conn(*await asyncio.open_connection(*self.entry))
                status, served, keep = await self._exchange(conn)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            if conn is not None:
                conn.close()
            self.results.append(
                Result(sent, time.monotonic(), 0, "", f"{type(exc).__name__}: {exc}")
            )
            return
        if keep and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.close()
        ok = 200 <= status < 300
        cluster = served.split("/", 1)[0] if ok else ""
        error = "" if ok else f"HTTP {status}: {served}"
        self.results.append(Result(sent, time.monotonic(), status, cluster, error))

    async def _exchange(self, conn: _Conn) -> tuple[int, str, bool]:
        conn.writer.write(b"GET " + self.path + b" HTTP/1.1\r\nHost: " + self.host + b"\r\n\r\n")
        head = await conn.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ValueError("not an HTTP response")
        status = int(parts[1])
        length, served, keep, chunked = 0, "", True, False
        for line in lines[1:]:
            key, _, value = line.partition(b":")
            k = key.strip().lower()
            v = value.strip()
            if k == b"content-length":
                length = int(v)
            elif k == b"x-served-by":
                served = v.decode("latin-1")
            elif k == b"connection" and v.lower() == b"close":
                keep = False
            elif k == b"transfer-encoding":
                chunked = b"chunked" in v.lower()
        body = b""
        if chunked:
            while True:
                size = int((await conn.reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                body += (await conn.reader.readexactly(size + 2))[:size]
                if size == 0:
                    break
        elif length:
            body = await conn.reader.readexactly(length)
        if not 200 <= status < 300:
            served = body[:200].decode("latin-1", "replace")  # the gateway's reason
        return status, served, keep


# ----------------------------------------------------------------------------- analysis


@dataclass
class Drill:
    """What one fault did to the requests sent around it."""

    requests: int
    failed: int
    shift: float | None  # seconds from the fault until every window is >= 99% good
    max_latency: float
    failures: list[str] = field(default_factory=list)
    windows: list[tuple[float, int, dict[str, int]]] = field(default_factory=list)


def windows(
    results: Iterable[Result], *, start: float, end: float, width: float = WINDOW
) -> list[list[Result]]:
    """Requests grouped by the window of their send time, from ``start`` to ``end``."""
    n = max(1, int((end - start) / width + 0.999))
    out: list[list[Result]] = [[] for _ in range(n)]
    for r in results:
        if start <= r.sent < end:
            out[min(n - 1, int((r.sent - start) / width))].append(r)
    return out


def served_share(results: Iterable[Result], cluster: str) -> float:
    rs = list(results)
    return sum(1 for r in rs if r.ok and r.cluster == cluster) / len(rs) if rs else 0.0


def analyse(
    results: Iterable[Result],
    *,
    fault_at: float,
    end: float,
    bad: set[str],
    slow: float,
    width: float = WINDOW,
) -> Drill:
    """Failed requests sent after ``fault_at`` and the time until traffic has shifted.

    A request is *good* when it succeeded, was answered by a cluster not in ``bad`` and
    took less than ``slow`` seconds (so a request held up by a dead region is not good
    even when a retry saved it). ``shift``: from the fault to the start of the first
    window from which on every window has at least 99% good requests.
    """
    rs = [r for r in results if fault_at <= r.sent < end]
    groups = windows(rs, start=fault_at, end=end, width=width)

    def good(r: Result) -> bool:
        return r.ok and r.cluster not in bad and r.latency < slow

    shift: float | None = None
    for i in range(len(groups) - 1, -1, -1):
        g = groups[i]
        if g and sum(1 for r in g if good(r)) < 0.99 * len(g):
            shift = (i + 1) * width if i + 1 < len(groups) else None
            break
    else:
        shift = 0.0
    failed = [r for r in rs if not r.ok]
    table = []
    for i, g in enumerate(groups):
        counts: dict[str, int] = {}
        for r in g:
            key = r.cluster if r.ok else "FAILED"
            counts[key] = counts.get(key, 0) + 1
        table.append((round(i * width, 3), len(g), counts))
    return Drill(
        requests=len(rs),
        failed=len(failed),
        shift=shift,
        max_latency=max((r.latency for r in rs), default=0.0),
        failures=[f"{r.sent - fault_at:+.3f}s {r.error}" for r in failed[:10]],
        windows=table,
    )


def describe(drill: Drill) -> str:
    """A readable trace for assertion messages."""
    rows = [f"{t:6.2f}s n={n:3d} {json.dumps(c, sort_keys=True)}" for t, n, c in drill.windows]
    return (
        f"requests={drill.requests} failed={drill.failed} shift={drill.shift} "
        f"max_latency={drill.max_latency:.3f}\nfailures: {drill.failures}\n" + "\n".join(rows)
    )


def admin_json(url: str, token: str, timeout: float = 2.0) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())
