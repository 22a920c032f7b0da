"""The pool of idle upstream HTTP/1.1 connections (:class:`UpstreamConnection`).

:class:`UpstreamPool` keeps idle keep-alive connections per (host, port, TLS) and hands
them out newest first; connections idle longer than the idle timeout are closed by a
periodic sweep, and one periodic sweep checks the per-try and idle deadlines of every
live connection (no timer per request).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time

from gateway.proxy import (
    CONNECT,
    MAX_SWEEP_LAG,
    PoolKey,
    UpstreamConnection,
    UpstreamError,
)


class UpstreamPool:
    """Idle keep-alive connections per upstream (host, port, TLS)."""

    def __init__(
        self,
        *,
        max_idle_per_upstream: int = 256,
        idle_timeout: float = 60.0,
        clock: collections.abc.Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_idle = max_idle_per_upstream
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._idle: dict[PoolKey, list[UpstreamConnection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self._live: set[UpstreamConnection] = set()
        self._deadlines: asyncio.TimerHandle | None = None
        self.sweep_interval = 0.05  # resolution of per-try and idle timeouts
        self._last_sweep = 0.0
        self.connects = 0  # new connections opened (for tests and stats)
        self.reuses = 0

    async def acquire(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        connect_timeout: float,
    ) -> tuple[UpstreamConnection, bool]:
        """An idle connection (reused=True) or a new one; raises UpstreamError(CONNECT)."""
        key = (host, port, ssl_context is not None)
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                continue
            conn.begin()
            self.reuses += 1
            return conn, True
        loop = asyncio.get_running_loop()
        conn = UpstreamConnection(key, loop, self._live)
        if self._deadlines is None and not self._closed:
            self._deadlines = loop.call_later(self.sweep_interval, self._check_deadlines, loop)
        try:
            async with asyncio.timeout(connect_timeout):
                await loop.create_connection(
                    lambda: conn,
                    host,
                    port,
                    ssl=ssl_context,
                    server_hostname=(server_hostname or host) if ssl_context else None,
                )
        except TimeoutError:
            conn.close()
            raise UpstreamError(
                CONNECT, f"connect to {host}:{port} timed out", sent=False
            ) from None
        except (OSError, ssl.SSLError) as exc:
            conn.close()
            raise UpstreamError(
                CONNECT, f"connect to {host}:{port} failed: {exc}", sent=False
            ) from None
        self.connects += 1
        return conn, False

    def release(self, conn: UpstreamConnection) -> None:
        """Give a connection back after its response was read to the end."""
        transport = conn.transport
        if (  # reusable?
            self._closed
            or not conn.complete
            or not conn.keep_alive
            or conn.error is not None
            or conn.closed
            or conn.chunks
            or transport is None
            or transport.is_closing()
        ):
            conn.close()
            return
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = []
        if len(idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = self._clock()
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = conn.loop.call_later(self.idle_timeout / 2 + 0.1, self._sweep)

    def take_idle(self, key: PoolKey) -> UpstreamConnection | None:
        """An idle keep-alive connection to ``key`` right now, or None (no waiting)."""
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                continue
            if conn.status or conn.received:  # conn.begin()
                conn._reset_response()
            self.reuses += 1
            return conn
        return None

    def put_back(self, conn: UpstreamConnection) -> None:
        """Return a connection just taken with :meth:`take_idle` and not used."""
        if self._closed:
            conn.close()
            return
        self._idle.setdefault(conn.key, []).append(conn)

    def _check_deadlines(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        # time the process did not run (a stalled or starved event loop) is nobody's
        # failure: an answer may be waiting unread in the socket. Deadlines move by it.
        lag = now - self._last_sweep - self.sweep_interval if self._last_sweep else 0.0
        self._last_sweep = now
        live = list(self._live)
        if lag > MAX_SWEEP_LAG:
            for conn in live:
                if conn.deadline:
                    conn.deadline += lag
                if conn._idle_limit:
                    conn._last_rx += lag
        for conn in live:
            if conn.deadline:
                conn.check_deadline(now)
        if self._closed and not self._live:
            self._deadlines = None
            self._last_sweep = 0.0
            return
        self._deadlines = loop.call_later(self.sweep_interval, self._check_deadlines, loop)

    def discard(self, conn: UpstreamConnection) -> None:
        conn.close()

    def _sweep(self) -> None:
        self._sweeper = None
        cutoff = self._clock() - self.idle_timeout
        any_left = False
        for key, idle in list(self._idle.items()):
            keep = [c for c in idle if c.idle_since > cutoff and not c.closed]
            for c in idle:
                if c not in keep:
                    c.close()
            if keep:
                self._idle[key] = keep
                any_left = True
            else:
                del self._idle[key]
        if any_left and not self._closed:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self.idle_timeout / 2 + 0.1, self._sweep)

    def idle_count(self) -> int:
        return sum(len(v) for v in self._idle.values())

    def close(self) -> None:
        """Close every idle connection (drain); connections in use close on release."""
        self._closed = True
        if self._deadlines is not None and not self._live:
            self._deadlines.cancel()
            self._deadlines = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for c in idle:
                c.close()
        self._idle.clear()
