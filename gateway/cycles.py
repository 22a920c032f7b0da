"""The request/response cycles of the gateway's HTTP/1.1 protocol: ``_Cycle`` (uvicorn's,
writing a small answer in one ``write``) for the ASGI path and ``FastCycle`` for a request
served by callbacks (``gateway/fastpath.py``)."""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle


class _Cycle(RequestResponseCycle):
    """uvicorn's request/response cycle with a leaner ``send``.

    The response head is held back and written together with the first piece of the
    body (one write, one segment for a small answer instead of two). Header names and
    values are not re-validated with regular expressions: they come from llhttp-parsed
    upstream responses (tokens; no CR, LF or NUL) or from the gateway itself.
    """

    _head: bytes | None = None

    async def send(self, message: Any) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(f"Expected http.response.start, got {message['type']!r}")
            self.response_started = True
            self.waiting_for_100_continue = False
            status = message["status"]
            content = [STATUS_LINE[status]]
            close = False
            for name, value in message.get("headers", ()):
                if name == b"content-length" and self.chunked_encoding is None:
                    self.expected_content_length = int(value)
                    self.chunked_encoding = False
                elif name == b"transfer-encoding":
                    continue  # the server frames the body itself
                elif name == b"connection":
                    if b"close" in value.lower():
                        self.keep_alive = False
                        close = True
                    continue
                content += (name, b": ", value, b"\r\n")
            if not self.keep_alive or close:
                content.append(b"connection: close\r\n")
            if (
                self.chunked_encoding is None
                and self.scope["method"] != "HEAD"
                and status not in (204, 304)
            ):
                self.chunked_encoding = True
                content.append(b"transfer-encoding: chunked\r\n")
            content.append(b"\r\n")
            self._head = b"".join(content)
            return
        if self.response_complete:
            raise RuntimeError(f"Unexpected {message['type']!r} after the response completed")
        if message["type"] != "http.response.body":
            raise RuntimeError(f"Expected http.response.body, got {message['type']!r}")
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        head = self._head
        if head is not None:
            self._head = None
        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
            out = head or b""
        elif self.chunked_encoding:
            out = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            if not more_body:
                out += b"0\r\n\r\n"
            if head is not None:
                out = head + out
        else:
            if len(body) > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= len(body)
            out = head + body if head is not None else body
        if out:
            self.transport.write(out)
        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()


_ASGI = {"version": "3.0", "spec_version": "2.3"}


class _NoEvent:
    """The message event of a callback exchange: nobody waits on it."""

    __slots__ = ()

    def set(self) -> None:
        pass

    def clear(self) -> None:
        pass


_NO_EVENT = _NoEvent()


class FastCycle:
    """The cycle of a request served by callbacks, without an ASGI task (the app's
    ``try_fast``). It has the attributes uvicorn's protocol code touches; their initial
    values are class attributes, so making one per request sets a single attribute (a
    body, which such a request never has, would be ``body += data``: a new bytes)."""

    response_complete = False
    response_started = False
    disconnected = False
    more_body = True
    body = b""
    message_event = _NO_EVENT

    def __init__(self, keep_alive: bool, scope: Any) -> None:
        self.keep_alive = keep_alive
        self.scope = scope  # a pipelined request behind it replaces the protocol's
