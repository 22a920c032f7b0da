"""A real HTTP backend for tests: uvicorn (httptools) on a given loopback address.

Every answer is JSON describing what the backend saw, so a test can check what went
upstream::

    {"name": "b1", "method": "POST", "path": "/x", "query": "a=1",
     "headers": [["host", "shop.test"], ...], "body": "...",      # body only when < 64 KiB
     "body_length": 3, "body_sha256": "..."}

Behaviour per request, from query parameters (combine freely):

``status=503``      answer with that status
``sleep=0.5``       wait that long before answering
``stream=N``        send the answer body as N chunks (``chunk=BYTES`` each, default 1024)
                    instead of JSON, with chunked encoding
``size=N``          send N bytes of ``x`` with a Content-Length (a download)
``close=1``         answer with ``Connection: close``
``drop=1``          close the connection without answering (a reset, for retry tests)

``/ws`` (or any path) upgrades to WebSocket: every message is echoed back prefixed
with ``<name>:``; a message ``close:<code>`` closes with that code.

In-process: ``async with Backend("b1", host="127.0.0.2") as b: b.url`` (same event
loop as the test; ``b.requests`` counts requests; ``b.app.force_status = 503`` makes
every answer that status, ``b.app.force_delay = 1.0`` every answer late,
``b.app.force_drop = True`` every request a reset). In another process (for memory measurements):
``BackendProcess("b1", host="127.0.0.2")`` as a context manager, or
``python -m tests.support.backend --name b1 --host 127.0.0.2 --port 0`` (prints the port).

:class:`RawUpstream` answers every request with fixed raw bytes (for response framing
tests: an upstream that sends both Content-Length and Transfer-Encoding, and so on).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from federation.devstack.poll import stop_process
from tests.support.wait import wait_for

ECHO_LIMIT = 64 * 1024


class BackendApp:
    """The raw ASGI app of a test backend."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests = 0
        self.force_status: int | None = None
        self.force_delay = 0.0  # seconds to wait before every answer
        self.force_drop = False  # drop every connection without answering
        self.seen: list[dict[str, Any]] = []  # the last 100 requests (without bodies)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self.websocket(scope, receive, send)

    async def http(self, scope: Any, receive: Any, send: Any) -> None:
        self.requests += 1
        q = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
        if q.get("drop") or self.force_drop:
            # read the request, then vanish: the gateway sees a reset
            raise _Drop()
        digest = hashlib.sha256()
        length = 0
        kept = bytearray()
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return
            chunk = msg.get("body", b"")
            if chunk:
                digest.update(chunk)
                length += len(chunk)
                if len(kept) < ECHO_LIMIT:
                    kept += chunk[: ECHO_LIMIT - len(kept)]
            if not msg.get("more_body"):
                break
        delay = float(q.get("sleep", 0)) or self.force_delay
        if delay:
            await asyncio.sleep(delay)  # the behaviour under test: a slow backend
        status = self.force_status or int(q.get("status", 200))
        extra = [(b"x-backend", self.name.encode())]
        if q.get("close"):
            extra.append((b"connection", b"close"))
        info = {
            "name": self.name,
            "method": scope["method"],
            "path": scope["path"],
            "query": scope["query_string"].decode(),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        }
        self.seen = [*self.seen[-99:], info]
        if "stream" in q:
            n, size = int(q["stream"]), int(q.get("chunk", 1024))
            await send({"type": "http.response.start", "status": status, "headers": extra})
            piece = b"y" * size
            for _ in range(n):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        if "size" in q:
            total = int(q["size"])
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-length", str(total).encode()), *extra],
                }
            )
            block = b"x" * 65536
            left = total
            while left > 0:
                piece = block if left >= len(block) else block[:left]
                left -= len(piece)
                await send({"type": "http.response.body", "body": piece, "more_body": left > 0})
            if total == 0:
                await send({"type": "http.response.body", "body": b""})
            return
        info["body"] = kept.decode("latin-1") if length < ECHO_LIMIT else None
        info["body_length"] = length
        info["body_sha256"] = digest.hexdigest()
        body = json.dumps(info).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def websocket(self, scope: Any, receive: Any, send: Any) -> None:
        msg = await receive()
        if msg["type"] != "websocket.connect":
            return
        protos = scope.get("subprotocols") or []
        await send({"type": "websocket.accept", "subprotocol": protos[0] if protos else None})
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                return
            text = msg.get("text")
            if text is not None:
                if text.startswith("close:"):
                    await send({"type": "websocket.close", "code": int(text[6:])})
                    return
                if text == "headers":
                    hdrs = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
                    await send({"type": "websocket.send", "text": json.dumps(hdrs)})
                    continue
                await send({"type": "websocket.send", "text": f"{self.name}:{text}"})
            else:
                data = msg.get("bytes") or b""
                await send({"type": "websocket.send", "bytes": self.name.encode() + b":" + data})


class _Drop(Exception):
    pass


class _DropMiddleware:
    """Turn _Drop into an abrupt close of the connection (no answer at all)."""

    def __init__(self, app: BackendApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        except _Drop:
            transport = _current_transport(scope)
            if transport is not None:
                transport.abort()
            else:  # pragma: no cover - fallback: uvicorn closes on an unhandled error
                raise


def _current_transport(scope: Any) -> asyncio.Transport | None:
    return scope.get("extensions", {}).get("fedgate.transport") if scope else None


class _TransportProtocol(HttpToolsProtocol):
    """Exposes the transport to the app (so a test backend can drop a connection)."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {"fedgate.transport": self.transport}  # type: ignore[typeddict-item]


def _config(app: Any, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=_TransportProtocol,
        ws="websockets-sansio",
        lifespan="off",
        log_config=None,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        timeout_keep_alive=60,
        ws_ping_interval=None,
    )


class Backend:
    """An in-process backend on the running loop: ``async with Backend("b1") as b``."""

    def __init__(self, name: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.app = BackendApp(name)
        self._server: uvicorn.Server | None = None
        self._sock: socket.socket | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> int:
        return self.app.requests

    @property
    def force_status(self) -> int | None:
        return self.app.force_status

    @force_status.setter
    def force_status(self, value: int | None) -> None:
        self.app.force_status = value

    async def start(self) -> Backend:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(1024)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        config = _config(_DropMiddleware(self.app), self.host, self.port)
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        self._server, self._sock = server, sock
        return self

    async def stop(self) -> None:
        """Stop listening and close every connection (a dead backend)."""
        server, self._server = self._server, None
        if server is None:
            return
        for srv in server.servers:
            srv.close()
        for conn in list(server.server_state.connections):
            conn.transport.close()
        for task in list(server.server_state.tasks):
            task.cancel()
        for srv in server.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), timeout=1.0)
        if self._sock is not None:
            self._sock.close()

    async def __aenter__(self) -> Backend:
        return await self.start()

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class RawUpstream:
    """Answers every request with ``response`` (raw bytes), then closes or keeps going."""

    def __init__(self, response: bytes, *, host: str = "127.0.0.1", close: bool = True) -> None:
        self.response = response
        self.host = host
        self.port = 0
        self.close = close
        self.received = bytearray()
        self._server: asyncio.AbstractServer | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def __aenter__(self) -> RawUpstream:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    self.received += head
                    writer.write(self.response)
                    await writer.drain()
                    if self.close:
                        break
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                pass
            finally:
                writer.close()

        self._server = await asyncio.start_server(handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)


class BackendProcess:
    """A backend in its own process (``with BackendProcess("b1") as b: b.url``)."""

    def __init__(self, name: str, *, host: str = "127.0.0.1") -> None:
        self.name = name
        self.host = host
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> BackendProcess:
        root = Path(__file__).resolve().parents[2]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.backend", "--name", self.name,
             "--host", self.host, "--port", "0"],
            cwd=root, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(root)},
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.__exit__(None, None, None)
            raise RuntimeError(f"backend {self.name} did not start: {line!r}")
        self.port = int(line)

        def up() -> bool:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True

        wait_for(up, timeout=10, what=f"backend {self.name} listening")
        return self

    def __exit__(self, *exc: object) -> None:
        stop_process(self.proc, 5)


async def _main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="fedgate test backend")
    p.add_argument("--name", default="backend")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args(argv)
    b = await Backend(a.name, host=a.host, port=a.port).start()
    print(b.port, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await b.stop()


if __name__ == "__main__":
    import uvloop

    uvloop.run(_main())
