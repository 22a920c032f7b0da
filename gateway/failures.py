"""One vocabulary for how a try or a request fails, and who is to blame.

A try's failure is a :class:`FailureKind`: the upstream client (``proxy.py``) raises
:class:`~gateway.proxy.UpstreamError` with one, the retry rules
(:func:`gateway.resilience.retryable`) match ``retries.on`` against it, and the answer to
the client comes from :func:`status_for`. Failures caused by the client (it hung up, it
was too slow, its body was too large) are :class:`Reply` with ``client_fault`` True: they
are never recorded against an upstream, a breaker or an ejection.
"""

from __future__ import annotations

import enum


class FailureKind(enum.Enum):
    """How a try failed (the values are the ``retries.on`` condition names)."""

    CONNECT = "connect-failure"  # no connection: nothing reached the upstream
    RESET = "reset"  # the connection broke before a complete response head
    TIMEOUT = "timeout"  # the per-try timeout (or the request deadline) passed
    STATUS = "status"  # a complete response with a retryable status
    PROTOCOL = "protocol"  # a bad upstream answer (framing, limits): 502, never retried


def status_for(kind: FailureKind) -> int:
    """The status the client gets when the last try failed this way."""
    if kind is FailureKind.TIMEOUT:
        return 504
    if kind is FailureKind.CONNECT:
        return 503
    return 502


# answers caused by the client: never the upstream's fault
CLIENT_STATUSES = frozenset({400, 408, 413, 499})


class Reply(Exception):
    """End the request with this answer (499: the client is gone, nothing is sent)."""

    def __init__(
        self, status: int, reason: str, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or []

    @property
    def client_fault(self) -> bool:
        return self.status in CLIENT_STATUSES
