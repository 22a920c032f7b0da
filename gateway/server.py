"""The gateway's listeners: uvicorn servers on one event loop, and a graceful drain.

Listeners (names as in :attr:`Gateway.bound`):

``public``      north-south client traffic, plain HTTP
``public_tls``  the same over TLS (server certificate from Vault); needs ``tls.public_server``
``east_west``   gateway-to-gateway traffic: mutual TLS (``tls.east_west_server``), or plain
                HTTP only with ``insecureEastWest: true`` (development)
``admin``       the admin API (``admin_app``)

Each listener is a :class:`uvicorn.Server` with uvloop, httptools (our hardened
:class:`~gateway.protocol.GatewayProtocol`), lifespan off, and no signal handlers of its
own: the process (``fedgate serve``) owns SIGTERM and calls :meth:`Gateway.drain`. The
sockets are bound here, so a busy port is an ``OSError`` with a clear message.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import ssl
from typing import Any

import uvicorn

from gateway.addresses import split_host_port
from gateway.app import listener_app
from gateway.balancer import Balancer
from gateway.config import DataPlaneSettings, raise_fd_limit
from gateway.h2.listen import h2_limits, with_h2
from gateway.passive import PassiveStats
from gateway.placement import Placement
from gateway.plane import DataPlane
from gateway.protocol import protocol_class
from gateway.ratelimit import RateLimiter
from gateway.resilience import CircuitBreakers, RetryBudget
from gateway.telemetry import Telemetry
from gateway.tls import TlsContexts
from gateway.types import ASGIApp, ViewHolder
from gateway.upstream_pool import UpstreamPool
from gateway.ws_protocol import ws_protocol_class


def _bind(hostport: str) -> socket.socket:
    try:
        host, port = split_host_port(hostport)
    except ValueError as exc:
        raise OSError(str(exc)) from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, exc.strerror, hostport) from None  # names the listener
    return sock


class Gateway:
    """The data plane of one process."""

    def __init__(
        self,
        *,
        settings: DataPlaneSettings | Any,
        holder: ViewHolder,
        placement: Placement,
        balancer: Balancer,
        breakers: CircuitBreakers,
        budget: RetryBudget,
        limiter: RateLimiter,
        telemetry: Telemetry,
        passive: PassiveStats,
        tls: TlsContexts | None,
        admin_app: ASGIApp | None,
    ) -> None:
        """``settings``: a :class:`DataPlaneSettings` (or the process settings, converted
        by :meth:`DataPlaneSettings.from_settings`)."""
        settings = DataPlaneSettings.from_settings(settings)
        self.settings = settings
        self.tls = tls
        self.admin_app = admin_app
        self.pool = UpstreamPool()
        self.plane = DataPlane(
            settings=settings,
            holder=holder,
            placement=placement,
            balancer=balancer,
            breakers=breakers,
            budget=budget,
            limiter=limiter,
            telemetry=telemetry,
            passive=passive,
            tls=tls,
            pool=self.pool,
        )
        self._servers: dict[str, uvicorn.Server] = {}
        self._bound: dict[str, tuple[str, int]] = {}
        self.draining = False

    @property
    def bound(self) -> dict[str, tuple[str, int]]:
        """Listener name -> (host, port) actually bound."""
        return dict(self._bound)

    def _listeners(self) -> list[tuple[str, str, ssl.SSLContext | None, Any]]:
        s = self.settings
        tls = self.tls
        out: list[tuple[str, str, ssl.SSLContext | None, Any]] = [
            ("public", s.listen.public, None, listener_app(self.plane, "public"))
        ]
        if s.listen.public_tls:
            if tls is None or tls.public_server is None:
                raise OSError(f"listen.publicTls {s.listen.public_tls}: no TLS certificate")
            out.append(
                (
                    "public_tls",
                    s.listen.public_tls,
                    tls.public_server,
                    listener_app(self.plane, "public_tls"),
                )
            )
        if s.listen.east_west:
            if tls is not None and tls.east_west_server is not None:
                ctx: ssl.SSLContext | None = tls.east_west_server
            elif s.insecure_east_west:
                ctx = None
            else:
                raise OSError(
                    f"listen.eastWest {s.listen.east_west}: needs mutual TLS (Vault) or "
                    "insecureEastWest: true"
                )
            out.append(
                ("east_west", s.listen.east_west, ctx, listener_app(self.plane, "east_west"))
            )
        if self.admin_app is not None:
            admin_ctx = tls.public_server if s.admin_tls and tls is not None else None
            if s.admin_tls and admin_ctx is None:
                raise OSError("admin.tls needs the public certificate from Vault")
            out.append(("admin", s.listen.admin, admin_ctx, self.admin_app))
        return out

    async def start(self) -> None:
        """Bind and serve every configured listener (raises OSError if one cannot bind)."""
        raise_fd_limit()
        limits = self.settings.limits
        try:
            for name, hostport, ctx, app in self._listeners():
                sock = _bind(hostport)
                try:
                    server = self._server(name, app, ctx, limits)
                    await server.startup(sockets=[sock])
                except BaseException:
                    sock.close()
                    raise
                self._servers[name] = server
                addr = sock.getsockname()
                self._bound[name] = (addr[0], addr[1])
        except BaseException:
            await self._close_all()
            raise
        _tune_gc()

    def _server(
        self, name: str, app: Any, ctx: ssl.SSLContext | None, limits: Any
    ) -> uvicorn.Server:
        http = protocol_class(
            name,
            max_header_bytes=limits.max_header_bytes,
            header_timeout=limits.header_timeout,
            keep_alive_timeout=limits.keep_alive_timeout,
            max_connections=limits.max_connections if name != "admin" else None,
        )
        if name != "admin":  # HTTP/2: ALPN h2, or h2c with prior knowledge
            http = with_h2(http, h2_limits(limits, limits.keep_alive_timeout))
        kwargs: dict[str, Any] = {}
        if ctx is not None:
            kwargs["ssl_context_factory"] = lambda _config, _default, c=ctx: c
        config = uvicorn.Config(
            app,
            http=http,
            loop="uvloop",
            ws=ws_protocol_class(name, write_timeout=limits.header_timeout)
            if name != "admin"
            else "none",
            lifespan="off",
            proxy_headers=False,
            server_header=False,
            date_header=False,
            access_log=False,
            log_config=None,
            timeout_keep_alive=int(limits.keep_alive_timeout),
            limit_concurrency=None,  # the protocol caps connections, shedding idle ones first
            ws_ping_interval=None,
            ws_max_size=64 * 1024 * 1024,
            **kwargs,
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        return server

    # ------------------------------------------------------------ drain
    async def drain(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests finish (Connection: close), close idle
        connections; after ``timeout`` cancel what is left. The admin listener goes last."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        data = [s for n, s in self._servers.items() if n != "admin"]
        for server in data:
            for srv in server.servers:
                srv.close()
        for server in data:
            for conn in list(server.server_state.connections):
                # a WebSocket already closing raises (uvicorn: InvalidState); closed below
                with contextlib.suppress(Exception):
                    conn.shutdown()
        while loop.time() < deadline and any(
            s.server_state.connections or s.server_state.tasks for s in data
        ):
            await asyncio.sleep(0.05)  # poll in-flight work under the drain deadline
        for server in data:
            for task in list(server.server_state.tasks):
                task.cancel()
            for conn in list(server.server_state.connections):
                transport = getattr(conn, "transport", None)
                if transport is not None:
                    transport.close()
        self.pool.close()
        self.plane.h2_pool.close()
        await self._close_all()

    async def _close_all(self) -> None:
        for server in self._servers.values():
            for srv in getattr(server, "servers", []):
                srv.close()
            admin_conns = list(server.server_state.connections)
            for conn in admin_conns:
                with contextlib.suppress(Exception):
                    conn.shutdown()
        for server in self._servers.values():
            for srv in getattr(server, "servers", []):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(srv.wait_closed(), timeout=1.0)
        self._servers.clear()
        self._bound.clear()


GC_GEN0_THRESHOLD = 20000


def _tune_gc() -> None:
    """Keep the cyclic garbage collector off the request path's tail.

    Everything alive once the listeners are bound (modules, settings, the view, the
    route table) is moved to the permanent generation (``gc.freeze``), so a full
    collection no longer walks it; and the youngest generation collects every 20,000
    container allocations instead of every 700 (a request frees almost everything it
    allocates by reference counting, so a young collection finds little)."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    if gc.get_threshold()[0] < GC_GEN0_THRESHOLD:
        gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
