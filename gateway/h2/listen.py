"""HTTP/2 on the gateway's listeners: the HTTP/1.1 protocol class, taught to hand a
connection over to :class:`~gateway.h2.server.H2ServerProtocol`.

A TLS connection whose ALPN chose ``h2`` is handed over as soon as it is made; any
other connection (plain, or TLS without ALPN) is handed over when its first bytes are
the 24-byte HTTP/2 client preface (h2c with prior knowledge). Every other connection
stays HTTP/1.1: the check costs one flag test per read once the first bytes are seen.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.h2.server import PREFACE, H2Limits, H2ServerProtocol
from gateway.protocol import _LIVE, GatewayProtocol


class H2Capable(GatewayProtocol):
    """Mixed into a listener's protocol class by :func:`with_h2`."""

    h2_limits: H2Limits = H2Limits()
    _h2_checked = False
    _h2_head = b""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            self._h2_checked = True
            self._to_h2(b"")

    def data_received(self, data: bytes) -> None:
        if self._h2_checked:
            super().data_received(data)
            return
        head = self._h2_head + data if self._h2_head else data
        if PREFACE.startswith(head[:24]):
            if len(head) < 24:
                self._h2_head = head  # a preface split over reads
                return
            self._h2_checked = True
            self._to_h2(head)
            return
        self._h2_checked = True
        self._h2_head = b""
        super().data_received(head)

    def _to_h2(self, data: bytes) -> None:
        """Hand the transport to an HTTP/2 protocol and forget this one."""
        transport = self.transport
        self.connections.discard(self)
        live = _LIVE.get(type(self))
        if live is not None:
            live.discard(self)
        proto = H2ServerProtocol(
            self.app,
            limits=self.h2_limits,
            scheme=self.scheme or "http",
            server=self.server,
            client=self.client,
            peer=self.peer,
            connections=self.connections,
            tasks=self.tasks,
            limit_concurrency=self.limit_concurrency,
        )
        transport.set_protocol(proto)
        proto.connection_made(transport)
        if data:
            proto.data_received(data)


def h2_limits(limits: Any, idle_timeout: float) -> H2Limits:
    """The HTTP/2 limits of a listener from the gateway's ``limits`` settings."""
    return H2Limits(
        max_header_list_size=limits.max_header_bytes,
        header_timeout=limits.header_timeout,
        idle_timeout=idle_timeout,
        write_timeout=limits.header_timeout,  # the client's idle limit, both directions
    )


def with_h2(cls: type[GatewayProtocol], limits: H2Limits) -> type[GatewayProtocol]:
    """``cls`` (from :func:`gateway.protocol.protocol_class`) that also speaks HTTP/2."""
    attrs: dict[str, Any] = {"h2_limits": limits}
    return type(f"{cls.__name__}_h2", (H2Capable, cls), attrs)
