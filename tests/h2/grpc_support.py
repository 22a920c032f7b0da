"""Real ``grpcio`` servers and clients for the gRPC tests (raw bytes, no generated code).

:class:`EchoServer` serves ``/test.Echo/{Unary,ServerStream,ClientStream,Bidi,Slow}``
and ``grpc.health.v1.Health`` on a loopback port, in its own threads. Every answer
starts with the server's name, so a test sees which backend (cluster) served a call.
``fail_with`` makes every call end with that status (UNAVAILABLE, for retry tests).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "test.Echo"


class EchoServer:
    def __init__(self, name: str, *, host: str = "127.0.0.1") -> None:
        self.name = name
        self.host = host
        self.calls = 0
        self.fail_with: grpc.StatusCode | None = None
        self.fail_first = 0  # fail this many calls with fail_with, then serve
        self._lock = threading.Lock()
        self.forever_ended = threading.Event()  # a Forever stream saw its call end
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self._unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self._server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self._client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(self._bidi),
            "Slow": grpc.unary_unary_rpc_method_handler(self._slow),
            "Forever": grpc.unary_stream_rpc_method_handler(self._forever),
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port(f"{host}:0")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self.health.set("", status)
        self.health.set(SERVICE, status)

    def __enter__(self) -> EchoServer:
        self.server.start()
        self.set_serving(True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(grace=None).wait(5)

    def _count(self, context: Any) -> None:
        with self._lock:
            self.calls += 1
            failing = self.fail_with is not None and (
                self.fail_first == 0 or self.calls <= self.fail_first
            )
        if failing:
            assert self.fail_with is not None
            context.abort(self.fail_with, f"{self.name} fails on purpose")

    def _unary(self, request: bytes, context: Any) -> bytes:
        self._count(context)
        context.set_trailing_metadata((("x-served-by", self.name),))
        return self.name.encode() + b":" + request

    def _server_stream(self, request: bytes, context: Any) -> Iterator[bytes]:
        self._count(context)
        n = int(request or b"3")
        for i in range(n):
            yield b"%s:%d" % (self.name.encode(), i)

    def _client_stream(self, requests: Iterator[bytes], context: Any) -> bytes:
        self._count(context)
        return self.name.encode() + b":" + b"+".join(requests)

    def _bidi(self, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        self._count(context)
        for request in requests:
            yield self.name.encode() + b":" + request

    def _forever(self, request: bytes, context: Any) -> Iterator[bytes]:
        self._count(context)
        i = 0
        deadline = time.monotonic() + 30  # bounded even if nobody cancels
        while context.is_active() and time.monotonic() < deadline:
            yield b"%d" % i
            i += 1
            time.sleep(0.02)  # pacing: one message every 20 ms
        self.forever_ended.set()

    def _slow(self, request: bytes, context: Any) -> bytes:
        self._count(context)
        deadline = time.monotonic() + float(request or b"1")
        while time.monotonic() < deadline and context.is_active():
            time.sleep(0.01)  # pacing: the server's own work, bounded by the request
        return self.name.encode() + b":slow"


def channel(target: str, authority: str = "echo.test") -> grpc.Channel:
    """A client channel to a gateway listener, addressed to ``authority``."""
    return grpc.insecure_channel(target, options=[("grpc.default_authority", authority)])


def unary(ch: grpc.Channel, method: str = "Unary") -> Any:
    return ch.unary_unary(f"/{SERVICE}/{method}")


def server_stream(ch: grpc.Channel) -> Any:
    return ch.unary_stream(f"/{SERVICE}/ServerStream")


def client_stream(ch: grpc.Channel) -> Any:
    return ch.stream_unary(f"/{SERVICE}/ClientStream")


def bidi(ch: grpc.Channel) -> Any:
    return ch.stream_stream(f"/{SERVICE}/Bidi")
