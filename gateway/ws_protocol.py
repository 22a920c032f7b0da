"""The gateway's WebSocket server protocol: uvicorn's sans-I/O one, with the verified
mTLS peer in the scope and every close bounded.

uvicorn closes the transport with ``transport.close()``, which waits for the write buffer
to flush first: a client that stopped reading never lets it, and the connection stayed in
the listener's ``connections`` (a slot under its cap, and the unsent frames in memory) for
as long as the client kept its socket open. Here, once the connection is closing (the
gateway gave up on the client, the app ended, the client's close frame, a drain), a
buffer still unsent ``write_timeout`` later (the listener's ``limits.headerTimeout``, as
the HTTP/2 server does) aborts the transport. The closing handshake's own wait (uvicorn's
``close_timeout`` after a close frame is sent) ends with an abort too when the close frame
itself never left: the client has had that long to read it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from gateway.peer import transport_peer


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    """Per-listener settings are class attributes (see :func:`ws_protocol_class`)."""

    write_timeout: float = 10.0  # a closing connection's unsent buffer is dropped after this

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._abort_timer: asyncio.TimerHandle | None = None

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope: Any = getattr(self, "scope", None)
        if scope is not None:  # the ASGI task reads the scope when it first runs
            scope["fedgate.peer"] = transport_peer(self.transport)

    # ------------------------------------------------------------ bounded close
    def _bound_close(self) -> None:
        """The transport is closing with bytes unsent: abort it if they are still there
        after ``write_timeout`` (one timer per connection, armed once)."""
        transport = self.transport
        if (
            self._abort_timer is None
            and transport.is_closing()
            and transport.get_write_buffer_size()
        ):
            self._abort_timer = self.loop.call_later(self.write_timeout, transport.abort)

    def _close_handshake_over(self) -> None:
        """uvicorn's ``close_timeout`` after our close frame: close; what is still unsent
        then (the close frame itself included) is not waited for."""
        self.close_timer = None
        transport = self.transport
        transport.close()
        if transport.get_write_buffer_size():
            transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        timer = self._abort_timer
        if timer is not None:
            timer.cancel()
            self._abort_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # a close frame from the client, a protocol error
        self._bound_close()

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        self._bound_close()

    def shutdown(self) -> None:
        super().shutdown()
        self._bound_close()

    async def send(self, message: Any) -> None:
        had_timer = self.close_timer is not None
        await super().send(message)
        timer = self.close_timer
        if timer is not None and not had_timer:  # our close frame sent: the handshake's wait
            timer.cancel()
            self.close_timer = self.loop.call_later(self.close_timeout, self._close_handshake_over)
        self._bound_close()

    async def run_asgi(self) -> None:
        await super().run_asgi()  # closes the transport unless a close handshake is on
        self._bound_close()


def ws_protocol_class(name: str, *, write_timeout: float) -> type[GatewayWebSocketProtocol]:
    """A WebSocket protocol class with this listener's limits (uvicorn instantiates the
    class it is given)."""
    return type(
        f"GatewayWebSocketProtocol_{name}",
        (GatewayWebSocketProtocol,),
        {"write_timeout": write_timeout},
    )
