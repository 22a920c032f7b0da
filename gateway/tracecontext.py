"""W3C trace context of the request path: ``traceparent`` parsing and formatting, the ids
and the per-request :class:`RequestTrace` (see ``gateway/telemetry.py``)."""

from __future__ import annotations

import random
import re
from typing import Any

__all__ = ["NO_TRACE", "RequestTrace", "format_traceparent", "parse_traceparent", "traces_url"]

_TRACEPARENT = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16


def parse_traceparent(value: bytes) -> tuple[str, str, int] | None:
    """``(trace_id, parent_id, flags)`` of a valid version-00 W3C traceparent, else None.

    Strict: exactly ``00-<32 lower hex>-<16 lower hex>-<2 lower hex>``, trace id and
    parent id not all zeros. Anything else means "no usable parent": start a new trace.
    """
    m = _TRACEPARENT.fullmatch(value.strip(b" \t"))
    if m is None:
        return None
    trace_id, parent_id, flags = m.groups()
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id.decode(), parent_id.decode(), int(flags, 16)


def format_traceparent(trace_id: str, span_id: str, sampled: bool) -> bytes:
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}".encode()


def new_trace_id() -> str:
    while True:
        v = random.getrandbits(128)
        if v:
            return f"{v:032x}"


def new_span_id() -> str:
    while True:
        v = random.getrandbits(64)
        if v:
            return f"{v:016x}"


class RequestTrace:
    """The trace context of one request.

    ``trace_id`` / ``span_id`` are this gateway's server span (lower hex; empty when tracing
    is off); ``parent_id`` is the client's span, if it sent a valid traceparent;
    ``traceparent`` is the header value to send upstream (same trace id, this gateway's
    span as parent), ``b""`` when tracing is off (then forward the client's header as is).
    """

    __slots__ = ("parent_id", "sampled", "span", "span_id", "start", "trace_id", "traceparent")

    def __init__(
        self,
        trace_id: str,
        span_id: str,
        parent_id: str | None,
        sampled: bool,
        traceparent: bytes,
        span: Any = None,
        start: int = 0,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.sampled = sampled
        self.traceparent = traceparent
        self.span = span  # an OpenTelemetry SDK span when exporting, else None
        self.start = start  # time.time_ns() at begin, when exporting

    def __repr__(self) -> str:
        return f"RequestTrace(trace_id={self.trace_id!r}, span_id={self.span_id!r})"


NO_TRACE = RequestTrace("", "", None, False, b"")


def traces_url(endpoint: str) -> str:
    """An OTLP/HTTP base URL (``http://host:4318``) gets ``/v1/traces`` appended."""
    stripped = endpoint.rstrip("/")
    scheme_sep = stripped.find("://")
    rest = stripped[scheme_sep + 3 :] if scheme_sep >= 0 else stripped
    if "/" not in rest:
        return stripped + "/v1/traces"
    return stripped
