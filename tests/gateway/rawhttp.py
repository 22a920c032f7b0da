"""A raw HTTP/1.1 client and hostile upstreams for the regression tests (bytes on sockets,
no client library that would smooth over what the gateway does)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from types import TracebackType


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, addr: tuple[str, int]) -> RawClient:
        reader, writer = await asyncio.open_connection(*addr, limit=1 << 22)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, timeout: float = 5.0) -> tuple[int, dict[bytes, bytes], bytes]:
        """One response: (status, headers, body); Content-Length framed or until EOF."""
        async with asyncio.timeout(timeout):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = int(lines[0].split()[1])
            headers: dict[bytes, bytes] = {}
            for line in lines[1:]:
                if b":" in line:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip()
            if b"content-length" in headers:
                body = await self.reader.readexactly(int(headers[b"content-length"]))
            elif headers.get(b"transfer-encoding") == b"chunked":
                body = b""
                while True:
                    size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                    body += await self.reader.readexactly(size + 2)
                    if size == 0:
                        break
            else:
                body = await self.reader.read()
            return status, headers, body

    async def closed(self, timeout: float = 5.0) -> bool:
        """True once the gateway closed the connection (EOF), within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
            return True
        except (TimeoutError, ConnectionError):
            return False

    def close(self) -> None:
        self.writer.close()

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.writer.transport.abort()


def get(path: str = "/", host: str = "shop.test", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class HostileUpstream:
    """A loopback server running ``handler`` per connection (a misbehaving upstream)."""

    def __init__(self, handler: Handler, *, host: str = "127.0.0.5") -> None:
        self.handler = handler
        self.host = host
        self.port = 0
        self.connections = 0
        self.closed = 0  # connections the gateway closed (EOF or reset seen by the handler)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def __aenter__(self) -> HostileUpstream:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)  # type: ignore[arg-type]
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                self.closed += 1
            finally:
                self._tasks.discard(task)  # type: ignore[arg-type]
                writer.transport.abort()

        self._server = await asyncio.start_server(handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
