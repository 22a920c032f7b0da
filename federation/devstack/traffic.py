"""Steady, paced HTTP/1.1 load over keep-alive connections, counted by serving cluster.

Used by ``fedgate demo`` (and the e2e tests): requests are spread round-robin over the
entry gateways at a fixed rate; each answer is attributed to the cluster named in its
``x-served-by`` header. A failed request is any exception, timeout or non-2xx answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from dataclasses import dataclass, field


@dataclass
class Second:
    """What happened in one second of the run."""

    sent: int = 0
    served: Counter[str] = field(default_factory=Counter)  # cluster -> answers
    by_entry: Counter[tuple[str, str]] = field(default_factory=Counter)  # (entry, cluster)
    failed: int = 0
    latencies: list[float] = field(default_factory=list)


@dataclass
class Failure:
    at: float
    entry: str
    error: str


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class TrafficDriver:
    def __init__(
        self,
        entries: dict[str, tuple[str, int]],
        *,
        host: str,
        rate: float = 200.0,
        timeout: float = 5.0,
        max_connections: int = 64,
    ) -> None:
        self.entries = entries
        self.host = host.encode()
        self.rate = rate
        self.timeout = timeout
        self.max_connections = max_connections
        self.t0 = time.monotonic()
        self.seconds: dict[int, Second] = {}
        self.failures: list[Failure] = []
        self.total = 0
        self.ok = 0
        self._idle: dict[str, deque[_Conn]] = {name: deque() for name in entries}
        self._open: dict[str, int] = dict.fromkeys(entries, 0)
        self._tasks: set[asyncio.Task[None]] = set()
        self._seq = 0

    def second(self, at: float) -> Second:
        idx = int(at - self.t0)
        sec = self.seconds.get(idx)
        if sec is None:
            sec = self.seconds[idx] = Second()
        return sec

    async def run(self, stop: asyncio.Event) -> None:
        names = list(self.entries)
        tick = 0.01
        credit = 0.0
        last = time.monotonic()
        i = 0
        while not stop.is_set():
            now = time.monotonic()
            credit += (now - last) * self.rate
            last = now
            while credit >= 1.0:
                credit -= 1.0
                entry = names[i % len(names)]
                i += 1
                task = asyncio.create_task(self._one(entry))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=tick)  # pacing
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.timeout + 1)
        for conns in self._idle.values():
            for c in conns:
                c.close()

    async def _connect(self, entry: str) -> _Conn:
        host, port = self.entries[entry]
        reader, writer = await asyncio.open_connection(host, port)
        self._open[entry] += 1
        return _Conn(reader, writer)

    async def _one(self, entry: str) -> None:
        start = time.monotonic()
        sec = self.second(start)
        sec.sent += 1
        self.total += 1
        self._seq += 1
        conn: _Conn | None = None
        try:
            idle = self._idle[entry]
            conn = (
                idle.pop() if idle else await asyncio.wait_for(self._connect(entry), self.timeout)
            )
            status, served, keep = await asyncio.wait_for(
                self._exchange(conn, self._seq), self.timeout
            )
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            if conn is not None:
                conn.close()
                self._open[entry] -= 1
            self._fail(entry, start, f"{type(exc).__name__}: {exc}")
            return
        if keep and self._open[entry] <= self.max_connections:
            self._idle[entry].append(conn)
        else:
            conn.close()
            self._open[entry] -= 1
        if not 200 <= status < 300:
            self._fail(entry, start, f"HTTP {status}")
            return
        self.ok += 1
        cluster = served.split("/", 1)[0] if served else "?"
        sec.served[cluster] += 1
        sec.by_entry[(entry, cluster)] += 1
        sec.latencies.append(time.monotonic() - start)

    def _fail(self, entry: str, start: float, error: str) -> None:
        self.second(start).failed += 1
        self.failures.append(Failure(start - self.t0, entry, error))

    async def _exchange(self, conn: _Conn, seq: int) -> tuple[int, str, bool]:
        conn.writer.write(
            b"GET /demo?n=" + str(seq).encode() + b" HTTP/1.1\r\nHost: " + self.host + b"\r\n\r\n"
        )
        await conn.writer.drain()
        head = await conn.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ValueError("not an HTTP response")
        status = int(parts[1])
        length = 0
        served = ""
        keep = True
        chunked = False
        for line in lines[1:]:
            key, _, value = line.partition(b":")
            k = key.strip().lower()
            if k == b"content-length":
                length = int(value.strip())
            elif k == b"x-served-by":
                served = value.strip().decode()
            elif k == b"connection" and value.strip().lower() == b"close":
                keep = False
            elif k == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        if chunked:
            while True:
                size = int((await conn.reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                await conn.reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await conn.reader.readexactly(length)
        return status, served, keep
