"""The active health probe of ``protocol: grpc`` services: ``grpc.health.v1.Health/Check``.

One call over a fresh HTTP/2 connection (prior knowledge, or TLS), the ``h2`` library
for framing and the two protobuf messages encoded by hand (``HealthCheckRequest`` is a
single string field, ``HealthCheckResponse`` a single enum field): healthy when the call
ends with ``grpc-status: 0`` and the status is ``SERVING``. The service name asked for
is ``healthCheck.path`` without its leading ``/`` (the default ``/healthz`` asks for the
server as a whole, service ``""``). Same signature as
:func:`federation.health.http_probe`, which it stands in for.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import h2.config
import h2.connection
import h2.events
import h2.exceptions

CHECK_PATH = b"/grpc.health.v1.Health/Check"
SERVING = 1
_DEFAULT_PATH = "/healthz"


def check_request(service: str) -> bytes:
    """A length-prefixed ``HealthCheckRequest{service}``."""
    name = service.encode()
    body = b"\x0a" + _varint(len(name)) + name if name else b""
    return b"\x00" + len(body).to_bytes(4, "big") + body


def serving_status(message: bytes) -> int | None:
    """The ``status`` of a length-prefixed ``HealthCheckResponse`` (None if malformed)."""
    if len(message) < 5 or message[0] != 0:
        return None
    body = message[5 : 5 + int.from_bytes(message[1:5], "big")]
    if not body:
        return 0  # every field at its default: UNKNOWN
    if body[0] != 0x08 or len(body) < 2:
        return None
    return body[1] if body[1] < 0x80 else None


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


async def grpc_probe(
    host: str,
    port: int,
    path: str,
    *,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
    host_header: str | None = None,
) -> bool:
    """One ``Health/Check`` call: True when the server answers SERVING within ``timeout``."""
    service = "" if path == _DEFAULT_PATH else path.lstrip("/")
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ssl_context,
                server_hostname=host if ssl_context is not None else None,
            )  # fmt: skip
            conn.initiate_connection()
            conn.send_headers(1, [
                (b":method", b"POST"), (b":scheme", b"https" if ssl_context else b"http"),
                (b":authority", (host_header or host).encode()), (b":path", CHECK_PATH),
                (b"content-type", b"application/grpc"), (b"te", b"trailers"),
            ])  # fmt: skip
            conn.send_data(1, check_request(service), end_stream=True)
            writer.write(conn.data_to_send())
            data = b""
            status: bytes | None = None
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return False
                for event in conn.receive_data(chunk):
                    if isinstance(event, h2.events.DataReceived) and event.stream_id == 1:
                        data += event.data or b""
                        conn.acknowledge_received_data(event.flow_controlled_length or 0, 1)
                    elif isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                        for name, value in event.headers or ():
                            if name == b"grpc-status":
                                status = value
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id == 1:
                        return status == b"0" and serving_status(data) == SERVING
                    elif isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
                        return False
                pending = conn.data_to_send()
                if pending:
                    writer.write(pending)
    except (OSError, TimeoutError, ssl.SSLError, h2.exceptions.ProtocolError):
        return False
    finally:
        if writer is not None:
            writer.close()
            if ssl_context is None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 0.2)
