"""Failure handling on the request path: circuit breakers, retry rules, a retry budget.

* :class:`Breaker` / :class:`CircuitBreakers`: one breaker per (service, cluster). Closed,
  it counts consecutive failures and opens after ``consecutive_failures``; open, it
  rejects for ``open_for`` seconds; then half-open, it lets exactly one probe through:
  the probe's success closes it, its failure opens it again. At any state at most
  ``max_pending`` acquisitions are outstanding; beyond that :meth:`Breaker.try_acquire`
  is False and the proxy answers 503 at once.
* :func:`retryable`: whether a failed try may be tried again (the route's ``retries.on``
  conditions, the method's idempotency, whether anything reached the upstream).
* :class:`RetryBudget`: retries per service are at most ``budget_percent`` of the
  requests of the last 10 s (sliding, in 1 s buckets), with at least 3 retries per
  window so a quiet service can still retry (Envoy's retry budget, by window).

Everything here is synchronous, takes an injected clock and allocates nothing per call
on the common path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Literal

from federation.model import CircuitBreaker
from gateway.failures import FailureKind

__all__ = [
    "IDEMPOTENT_METHODS",
    "Breaker",
    "BreakerState",
    "CircuitBreakers",
    "FailureKind",
    "RetryBudget",
    "retryable",
]

BreakerState = Literal["closed", "open", "half-open"]


class Breaker:
    """The circuit breaker of one (service, cluster).

    The proxy calls :meth:`try_acquire` before a try and, when it was granted,
    :meth:`release` exactly once when the try is over (``ok=False``: connect failure,
    reset, timeout or 5xx). While half-open, the release that comes back decides: the
    breaker cannot tell the probe from a try acquired before it opened, so such a late
    release also counts as the probe's answer (it happened after the open period, which
    is what a probe asks).
    """

    __slots__ = (
        "_clock",
        "_failures",
        "_max_pending",
        "_on_change",
        "_open_for",
        "_opened_at",
        "_pending",
        "_probe_at",
        "_probing",
        "_state",
        "_threshold",
        "config",
    )

    def __init__(
        self,
        config: CircuitBreaker,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._on_change = on_change
        self._max_pending = config.max_pending if config.max_pending > 0 else 1 << 62
        self._threshold = config.consecutive_failures
        self._open_for = config.open_for
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._pending = 0
        self._probing = False
        self._probe_at = 0.0

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker whose time is up reads half-open)."""
        if self._state == "open" and self._clock() - self._opened_at >= self._open_for:
            self._set("half-open")
            self._probing = False
        return self._state

    @property
    def pending(self) -> int:
        """Acquisitions not released yet."""
        return self._pending

    def try_acquire(self) -> bool:
        """May a try go out? False: open, probe already out, or max_pending reached."""
        if self._pending >= self._max_pending:
            return False
        state = self._state
        if state != "closed":
            if state == "open":
                if self._clock() - self._opened_at < self._open_for:
                    return False
                self._set("half-open")
                self._probing = False
            now = self._clock()
            if self._probing and now - self._probe_at < self._open_for:
                return False  # one probe at a time (a lost one is replaced after open_for)
            self._probing = True
            self._probe_at = now
        self._pending += 1
        return True

    def release(self, ok: bool | None) -> None:
        """The try granted by :meth:`try_acquire` is over. ``ok=None``: it says nothing
        about the upstream (the client hung up, was too slow or sent too much): only the
        acquisition is given back (a half-open probe may be sent again)."""
        if self._pending > 0:
            self._pending -= 1
        state = self._state
        if ok is None:
            if state == "half-open":
                self._probing = False
            return
        if state == "closed":
            if ok:
                self._failures = 0
            else:
                self._failures += 1
                if 0 < self._threshold <= self._failures:
                    self._open()
        elif state == "half-open":
            self._probing = False
            if ok:
                self._failures = 0
                self._set("closed")
            else:
                self._open()
        # open: a late answer from before the breaker opened changes nothing

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._failures = 0
        self._probing = False
        self._set("open")

    def _set(self, state: BreakerState) -> None:
        if state != self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)


class CircuitBreakers:
    """The breakers of a gateway, keyed by (service, cluster)."""

    __slots__ = ("_breakers", "_clock", "_on_change")

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, str, str], None] | None = None,
    ) -> None:
        """``on_change(service, cluster, state)`` is called on every transition."""
        self._clock = clock
        self._on_change = on_change
        self._breakers: dict[tuple[str, str], Breaker] = {}

    def get(self, service: str, cluster: str, config: CircuitBreaker) -> Breaker:
        """The breaker of (service, cluster); a new one when the config changed."""
        key = (service, cluster)
        breaker = self._breakers.get(key)
        if breaker is not None and (breaker.config is config or breaker.config == config):
            breaker.config = config  # identity next time
            return breaker
        callback = self._on_change
        notify: Callable[[str], None] | None = None
        if callback is not None:

            def notify(state: str, _s: str = service, _c: str = cluster) -> None:
                callback(_s, _c, state)

        breaker = self._breakers[key] = Breaker(config, clock=self._clock, on_change=notify)
        if callback is not None:
            callback(service, cluster, "closed")
        return breaker

    def states(self) -> Mapping[tuple[str, str], str]:
        """(service, cluster) -> closed | open | half-open."""
        return {key: b.state for key, b in self._breakers.items()}

    def retain(self, keep: Callable[[str, str], bool]) -> None:
        """Forget the breakers of pairs the view no longer has (``keep`` says which stay)."""
        for key in [k for k in self._breakers if not keep(*k)]:
            del self._breakers[key]


# --------------------------------------------------------------------------- retries


IDEMPOTENT_METHODS: frozenset[bytes] = frozenset(
    {b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"}
)

_STATUS_CONDITIONS: dict[int, str] = {s: str(s) for s in range(500, 600)}
_STATUS = FailureKind.STATUS
_CONNECT = FailureKind.CONNECT
_PROTOCOL = FailureKind.PROTOCOL


def retryable(
    *,
    method: bytes,
    kind: FailureKind,
    status: int | None,
    conditions: frozenset[str],
    request_sent: bool,
) -> bool:
    """May a try that failed this way be tried again?

    ``conditions`` are the service's ``retries.on``: ``connect-failure``, ``reset``,
    ``timeout``, ``502``/``503``/``504`` (any status code as text) and ``5xx`` (any 5xx
    response, and as in Envoy also a connect failure, reset or timeout). A request whose
    method is not idempotent is retried only when nothing reached the upstream: a connect
    failure, or ``request_sent=False``.
    """
    if kind is _PROTOCOL:
        return False  # a bad answer is not the network: never tried again
    if kind is _STATUS:
        if status is None:
            return False
        code = _STATUS_CONDITIONS.get(status)
        if code is None or (code not in conditions and "5xx" not in conditions):
            return False
    elif kind.value not in conditions and "5xx" not in conditions:
        return False
    if method in IDEMPOTENT_METHODS:
        return True
    return kind is _CONNECT or not request_sent


class _Window:
    """Requests and retries of one service over a sliding window of buckets."""

    __slots__ = (
        "current",
        "ends",
        "fresh",
        "requests",
        "retries",
        "slot",
        "starts",
        "total_requests",
        "total_retries",
    )

    def __init__(self, buckets: int, current: int, starts: float, ends: float) -> None:
        self.requests = [0] * buckets
        self.retries = [0] * buckets
        self.total_requests = 0  # in the ring (``fresh`` not yet)
        self.total_retries = 0
        self.fresh = 0  # requests of the newest bucket, moved into the ring when it ends
        self.current = current  # absolute bucket number of the newest bucket
        self.slot = current % buckets  # its index in the ring
        self.starts = starts  # the newest bucket covers [starts, ends)
        self.ends = ends


class RetryBudget:
    """Retries per service limited to a share of its recent requests."""

    __slots__ = ("_bucket", "_buckets", "_clock", "_min_retries", "_windows")

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        window: float = 10.0,
        buckets: int = 10,
        min_retries: int = 3,
    ) -> None:
        self._clock = clock
        self._buckets = buckets
        self._bucket = window / buckets
        self._min_retries = min_retries
        self._windows: dict[str, _Window] = {}

    def on_request(self, service: str) -> None:
        """A request (not a retry) for ``service`` arrived."""
        w = self._windows.get(service)
        if w is None or not w.starts <= self._clock() < w.ends:
            w = self._advance(service)
        w.fresh += 1

    def try_retry(self, service: str, budget_percent: float) -> bool:
        """Take a retry from the budget; False: the budget is spent, do not retry."""
        w = self._windows.get(service)
        if w is None or not w.starts <= self._clock() < w.ends:
            w = self._advance(service)
        retries = w.total_retries + 1
        requests = w.total_requests + w.fresh
        if retries > self._min_retries and retries * 100.0 > requests * budget_percent:
            return False
        w.retries[w.slot] += 1
        w.total_retries += 1
        return True

    def retain(self, keep: Callable[[str], bool]) -> None:
        """Forget the windows of services for which ``keep(service)`` is False."""
        for name in [n for n in self._windows if not keep(n)]:
            del self._windows[name]

    def usage(self, service: str) -> tuple[int, int]:
        """(requests, retries) in the current window."""
        w = self._advance(service)
        return w.total_requests + w.fresh, w.total_retries

    def _advance(self, service: str) -> _Window:
        size = self._bucket
        now_bucket = int(self._clock() // size)
        w = self._windows.get(service)
        if w is None:
            w = _Window(self._buckets, now_bucket, now_bucket * size, (now_bucket + 1) * size)
            self._windows[service] = w
            return w
        if now_bucket != w.current:
            fresh = w.fresh
            if fresh:
                w.requests[w.slot] += fresh
                w.total_requests += fresh
                w.fresh = 0
            n = self._buckets
            if now_bucket - w.current >= n or now_bucket < w.current:
                for i in range(n):
                    w.requests[i] = 0
                    w.retries[i] = 0
                w.total_requests = 0
                w.total_retries = 0
            else:
                for b in range(w.current + 1, now_bucket + 1):
                    i = b % n
                    w.total_requests -= w.requests[i]
                    w.total_retries -= w.retries[i]
                    w.requests[i] = 0
                    w.retries[i] = 0
            w.current = now_bucket
            w.slot = now_bucket % n
            w.starts = now_bucket * size
            w.ends = (now_bucket + 1) * size
        return w
