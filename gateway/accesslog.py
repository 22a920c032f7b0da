"""The access log of the data plane: one line per request, JSON (the shape structlog's
``JSONRenderer`` gives: ``timestamp``, ``level``, ``event`` first) or console, written in
batches (at most every 0.2 s or every 256 lines)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import TextIO

from gateway.tracecontext import RequestTrace

_FLUSH_INTERVAL = 0.2
_FLUSH_LINES = 256

escape = json.encoder.encode_basestring_ascii


# the fixed parts of a JSON line, between the numbers of one request (AccessLog.json)
JsonParts = tuple[str, str, str, str]

_PROTOCOLS = {v: escape(f"HTTP/{v}") for v in ("1.0", "1.1", "2", "3")}


def protocol_json(version: str) -> str:
    return _PROTOCOLS.get(version) or escape(f"HTTP/{version}")


class AccessLog:
    """Writes access-log lines in batches to a text stream."""

    __slots__ = ("_flush_handle", "_pending", "_second", "_stamp", "prefix", "stream")

    def __init__(self, stream: TextIO | None, prefix: str = ',"method":') -> None:
        self.stream = stream
        self.prefix = prefix  # the JSON fields between "event" and the method
        self._pending: list[str] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = ""

    def write(self, line: str) -> None:
        pending = self._pending
        pending.append(line)
        if len(pending) >= _FLUSH_LINES:
            self.flush()
        elif self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._flush_handle = loop.call_later(_FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        handle, self._flush_handle = self._flush_handle, None
        if handle is not None:
            handle.cancel()
        if not self._pending:
            return
        data = "".join(self._pending)
        self._pending.clear()
        stream = self.stream if self.stream is not None else sys.stdout
        try:
            stream.write(data)
            stream.flush()
        except (OSError, ValueError):  # closed or broken stream: logging never fails a request
            pass

    def json_line(
        self,
        trace: RequestTrace,
        method: str,
        host: str,
        path: str,
        service: str | None,
        cluster: str | None,
        upstream: str | None,
        status: int,
        duration: float,
        client: str,
        retries: int,
        forwarded: bool,
        bytes_in: int = 0,
        bytes_out: int = 0,
        upstream_time: float | None = None,
        user_agent: str | None = None,
        protocol: str = "1.1",
        request_id: str | None = None,
    ) -> str:
        parts = self.json_parts(
            method, host, path, service, cluster, upstream, client, forwarded, bytes_in,
            user_agent, protocol, request_id,
        )  # fmt: skip
        tail = (
            f',"trace_id":"{trace.trace_id}","span_id":"{trace.span_id}"}}\n'
            if trace.trace_id
            else "}\n"
        )
        return self.json(parts, status, duration, retries, bytes_out, upstream_time, tail)

    def json_parts(
        self,
        method: str,
        host: str,
        path: str,
        service: str | None,
        cluster: str | None,
        upstream: str | None,
        client: str,
        forwarded: bool,
        bytes_in: int,
        user_agent: str | None,
        protocol: str,
        request_id: str | None,
    ) -> JsonParts:
        """The parts of a JSON line that do not change between two requests of one client
        with the same head to the same upstream (see :meth:`json`)."""
        e = escape
        return (
            f'Z","level":"info","event":"access"{self.prefix}{e(method)},"host":{e(host)},'
            f'"path":{e(path)},"status":',
            f',"service":{"null" if service is None else e(service)},'
            f'"upstream_cluster":{"null" if cluster is None else e(cluster)},'
            f'"upstream":{"null" if upstream is None else e(upstream)},'
            f'"client":{e(client)},"retries":',
            f',"forwarded":{"true" if forwarded else "false"},"bytes_in":{bytes_in},"bytes_out":',
            f',"user_agent":{"null" if user_agent is None else e(user_agent)},'
            f'"protocol":{_PROTOCOLS.get(protocol) or protocol_json(protocol)},'
            f'"request_id":{"null" if request_id is None else e(request_id)}',
        )

    def json(
        self,
        parts: JsonParts,
        status: int,
        duration: float,
        retries: int,
        bytes_out: int,
        upstream_time: float | None,
        tail: str = "}\n",
    ) -> str:
        """A JSON line: its fixed ``parts`` with this request's numbers and the time now
        (``tail``: the trace fields and the closing brace)."""
        now = time.time()
        sec = int(now)
        if sec != self._second:  # the stamp of the second, made once a second
            self._second = sec
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        a, b, c, d = parts
        return (
            f'{{"timestamp":"{self._stamp}.{int((now - sec) * 1000):03d}{a}{status},'
            f'"duration_ms":{duration * 1000.0:.3f}{b}{retries}{c}{bytes_out},"upstream_ms":'
            f"{'null' if upstream_time is None else f'{upstream_time * 1000.0:.3f}'}{d}{tail}"
        )

    def console_line(
        self,
        trace: RequestTrace,
        method: str,
        host: str,
        path: str,
        service: str | None,
        cluster: str | None,
        upstream: str | None,
        status: int,
        duration: float,
        client: str,
        retries: int,
        bytes_in: int = 0,
        bytes_out: int = 0,
        protocol: str = "1.1",
    ) -> str:
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(now))
        trace_part = f" trace={trace.trace_id}" if trace.trace_id else ""
        return (
            f"{stamp} access {client} {method} {host}{path} -> {status} "
            f"{duration * 1000.0:.1f}ms service={service or '-'} cluster={cluster or '-'} "
            f"upstream={upstream or '-'} retries={retries} in={bytes_in}B "
            f"out={bytes_out}B HTTP/{protocol}{trace_part}\n"
        )
