"""A small demo backend: answers every request with who served it.

``python -m federation.devstack.backend --listen 127.0.0.11:9001 --cluster aws-eu-west-1
--name shop-1`` serves HTTP/1.1 with keep-alive: ``GET /healthz`` is 200 ``ok``; any
other request gets 200 and a JSON body ``{"cluster", "backend", "method", "path"}`` with
the header ``x-served-by: <cluster>/<name>``. Request bodies are read and discarded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

MAX_HEAD = 65536


async def _handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, cluster: str, name: str
) -> None:
    served_by = f"{cluster}/{name}".encode()
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            try:
                method, target, _version = lines[0].split(" ", 2)
            except ValueError:
                writer.write(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
                await writer.drain()
                return
            length = 0
            close = False
            chunked = False
            for line in lines[1:]:
                key, _, value = line.partition(":")
                k = key.strip().lower()
                if k == "content-length":
                    length = int(value.strip() or 0)
                elif k == "connection" and value.strip().lower() == "close":
                    close = True
                elif k == "transfer-encoding" and "chunked" in value.lower():
                    chunked = True
            if chunked:
                while True:
                    size_line = await reader.readuntil(b"\r\n")
                    size = int(size_line.split(b";")[0].strip() or b"0", 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            elif length:
                await reader.readexactly(length)
            if target.split("?")[0] == "/healthz":
                body = b"ok"
                ctype = b"text/plain"
            else:
                body = json.dumps(
                    {"cluster": cluster, "backend": name, "method": method, "path": target}
                ).encode()
                ctype = b"application/json"
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: "
                + ctype
                + b"\r\nx-served-by: "
                + served_by
                + b"\r\ncontent-length: "
                + str(len(body)).encode()
                + (b"\r\nconnection: close" if close else b"")
                + b"\r\n\r\n"
                + body
            )
            await writer.drain()
            if close:
                return
    except (ConnectionError, ValueError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def serve(host: str, port: int, *, cluster: str, name: str) -> None:
    server = await asyncio.start_server(
        lambda r, w: _handle(r, w, cluster=cluster, name=name),
        host,
        port,
        limit=MAX_HEAD,
        reuse_address=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--listen", required=True, help="HOST:PORT")
    p.add_argument("--cluster", required=True)
    p.add_argument("--name", required=True)
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(serve(host, int(port), cluster=args.cluster, name=args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
