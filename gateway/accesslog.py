"""The access log of the data plane: one line per request, JSON (the shape structlog's
``JSONRenderer`` gives: ``timestamp``, ``level``, ``event`` first) or console, written in
batches (at most every 0.2 s or every 256 lines)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import TextIO

_FLUSH_INTERVAL = 0.2
_FLUSH_LINES = 256

escape = json.encoder.encode_basestring_ascii


class AccessLog:
    """Writes access-log lines in batches to a text stream."""

    __slots__ = ("_flush_handle", "_pending", "_second", "_stamp", "stream")

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self._pending: list[str] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = ""

    def timestamp(self, now: float) -> str:
        sec = int(now)
        if sec != self._second:
            self._second = sec
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._stamp}.{int((now - sec) * 1000):03d}Z"

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
