"""What both ends of an HTTP/2 connection do alike: the upstream connections of
:mod:`gateway.h2.client` and the client connections of :mod:`gateway.h2.server`.

* the ``h2`` state machine's configuration: inbound headers validated (a client's
  request, or an upstream's answer that may reach an HTTP/1.1 client), outbound ones
  not (they were validated where they came from, or are the gateway's own);
* writes batched once per event-loop iteration (:meth:`H2Plumbing.flush`): the frames
  of every stream that made progress in one iteration go out in one write;
* the transport's back-pressure (``pause_writing``/``resume_writing``, :meth:`drain`);
* flow control: the connection's receive window opened at the start, and received
  bytes acknowledged as they are consumed (:meth:`ack`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

import h2.config
import h2.connection
import h2.exceptions
import h2.settings

DEFAULT_WINDOW = 65535  # RFC 9113 section 6.9.2: every window starts at this


class H2Plumbing(asyncio.Protocol):
    """The plumbing of one HTTP/2 connection (see the module docstring)."""

    def __init__(
        self, *, client_side: bool, settings: dict[h2.settings.SettingCodes, int], window: int
    ) -> None:
        """``settings``: our SETTINGS; ``window``: the connection's receive window."""
        config = h2.config.H2Configuration(
            client_side=client_side, header_encoding=None, validate_inbound_headers=True,
            validate_outbound_headers=False, normalize_outbound_headers=False,
        )  # fmt: skip
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(client=client_side, initial_values=settings)
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.write_paused = False
        self._window = window
        self._flush_pending = False
        self._drain_waiters: list[asyncio.Future[None]] = []

    def start(self, transport: asyncio.BaseTransport) -> None:
        """The connection is made: the preface and SETTINGS go out, the window opens."""
        self.transport = cast(asyncio.Transport, transport)
        self.h2.initiate_connection()
        if self._window > DEFAULT_WINDOW:
            self.h2.increment_flow_control_window(self._window - DEFAULT_WINDOW)
        self.flush()

    # ------------------------------------------------------------ output
    def flush(self) -> None:
        """Write what h2 has queued, once per event-loop iteration: the frames of every
        stream that made progress in this iteration go out in one write."""
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self.flush_now)

    def flush_now(self) -> None:
        self._flush_pending = False
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def send_window(self, stream_id: int) -> int | None:
        """How many bytes of this stream's body may go out now (the peer's stream and
        connection windows, one frame at most); None: the stream is closed."""
        try:
            window: int = min(
                self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size
            )
        except h2.exceptions.StreamClosedError:
            return None
        return window

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        """The transport's buffer drained (or the connection is gone): writers go on."""
        self.write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    async def drain(self) -> None:
        """Wait while the transport pushes back."""
        if self.write_paused and not self.closed:
            waiter = self.loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    # ------------------------------------------------------------ input
    def ack(self, stream_id: int, flow: int) -> None:
        """``flow`` bytes of this stream were consumed: the peer may send that many more
        (on the connection only, when the stream is gone)."""
        if flow <= 0 or self.closed:
            return
        try:
            self.h2.acknowledge_received_data(flow, stream_id)
        except (h2.exceptions.StreamClosedError, KeyError):
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.increment_flow_control_window(flow)
        except h2.exceptions.ProtocolError:
            return
        self.flush()
