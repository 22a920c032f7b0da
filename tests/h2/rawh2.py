"""A raw HTTP/2 client for the abuse tests: writes any frame (hyperframe), reads frames
back until GOAWAY or close. A well-behaved client library would refuse to send these."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ENHANCE_YOUR_CALM = 11


@dataclass
class Outcome:
    goaway: int | None = None  # the GOAWAY error code, if one came
    closed: bool = False  # the server closed the connection
    frames: list[str] = field(default_factory=list)  # frame types seen


class RawH2:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.encoder = hpack.Encoder()

    @classmethod
    async def connect(cls, host: str, port: int) -> RawH2:
        reader, writer = await asyncio.open_connection(host, port)
        conn = cls(reader, writer)
        conn.send(PREFACE + SettingsFrame(0).serialize())
        return conn

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def request_block(self, authority: str, path: str = "/", extra: int = 0) -> bytes:
        headers = [(":method", "GET"), (":scheme", "http"), (":authority", authority),
                   (":path", path)]  # fmt: skip
        headers += [(f"x-pad-{i}", "v" * 16) for i in range(extra)]
        return self.encoder.encode(headers)

    def headers(self, stream_id: int, block: bytes, *, end_headers: bool = True,
                end_stream: bool = True) -> bytes:  # fmt: skip
        f = HeadersFrame(stream_id, data=block)
        if end_headers:
            f.flags.add("END_HEADERS")
        if end_stream:
            f.flags.add("END_STREAM")
        return f.serialize()

    @staticmethod
    def continuation(stream_id: int, block: bytes, *, end_headers: bool = False) -> bytes:
        f = ContinuationFrame(stream_id, data=block)
        if end_headers:
            f.flags.add("END_HEADERS")
        return f.serialize()

    @staticmethod
    def rst(stream_id: int) -> bytes:
        return RstStreamFrame(stream_id, error_code=8).serialize()  # CANCEL

    @staticmethod
    def settings() -> bytes:
        return SettingsFrame(0, settings={0x4: 65535}).serialize()

    @staticmethod
    def ping(n: int) -> bytes:
        return PingFrame(0, opaque_data=n.to_bytes(8, "big")).serialize()

    async def outcome(self, timeout: float) -> Outcome:
        """Read frames until the server closes (or ``timeout``)."""
        out = Outcome()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with contextlib.suppress(TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    break
                head = await asyncio.wait_for(self.reader.readexactly(9), left)
                frame, length = Frame.parse_frame_header(memoryview(head))
                body = await asyncio.wait_for(self.reader.readexactly(length), left)
                frame.parse_body(memoryview(body))
                out.frames.append(type(frame).__name__)
                if isinstance(frame, GoAwayFrame):
                    out.goaway = frame.error_code
        if self.reader.at_eof():
            out.closed = True
        return out

    def close(self) -> None:
        self.writer.close()
