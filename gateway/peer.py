"""The verified mutual-TLS peer identity of a client connection (``scope["fedgate.peer"]``),
for the HTTP/1.1 and WebSocket server protocols."""

from __future__ import annotations

import asyncio


def transport_peer(transport: asyncio.BaseTransport) -> str | None:
    """The peer's SPIFFE identity, or None (no TLS, or no verified identity)."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    from gateway.tls import peer_identity

    return peer_identity(ssl_object)
