"""The try loop's state machine, written once for HTTP, the fast path and WebSockets.

An :class:`Exchange` is one request's way through the plan: which cluster and endpoint
the next try goes to (placement, balancer, breaker), what a finished try is recorded as
(breaker, balancer, passive statistics, local ejection, latency), and whether a failed
try is tried again (``retryable()``, the attempt count, the request's deadline, the retry
budget). The request counts once in the budget, however many ways it takes: a fast-path
exchange that falls back to the ASGI path carries its Exchange (trace, tries, tried
endpoints, budget) along.

Where a retry goes: at most two tries per local cluster, another endpoint each time (the
balancer's ``exclude``), one try per remote cluster (its gateway has tried its own
endpoints already), and the last try always to the next cluster of the plan when there is
one. A try that ended by the client's doing (``record(None)``) counts against nothing.
"""

from __future__ import annotations

import time

from federation.model import RoutingView, Service
from gateway.failures import FailureKind
from gateway.plane import DataPlane, Target, upstream_protocol
from gateway.resilience import IDEMPOTENT_METHODS, Breaker, retryable
from gateway.telemetry import RequestTrace

_STATUS = FailureKind.STATUS
_NO_UPSTREAM = (503, "no upstream available")
_NO_CLUSTER = (503, "no healthy cluster for this service")
_NOTHING: frozenset[str] = frozenset()


class Exchange:
    """One request through the try loop (see the module docstring)."""

    __slots__ = (
        "breaker",
        "bytes_out",
        "ci",
        "deadline",
        "forwarded",
        "idempotent",
        "in_cluster",
        "last",
        "method",
        "peer_id",
        "per_try",
        "plan",
        "plane",
        "service",
        "span_start",
        "start",
        "t0",
        "target",
        "trace",
        "tried",
        "tried_last",
        "tries",
        "upstream_time",
        "view",
    )

    def __init__(
        self,
        plane: DataPlane,
        view: RoutingView,
        service: Service,
        method: bytes,
        trace: RequestTrace,
        start: float,
        deadline: float,
        plan: tuple[str, ...] | None = None,
        forwarded: bool = False,
        peer_id: str | None = None,
    ) -> None:
        """``start``: the plane's clock at the request's start; ``deadline``: the loop
        time by which everything up to the answer's head must be done."""
        self.plane = plane
        self.view = view
        self.service = service
        self.method = method
        self.idempotent = method in IDEMPOTENT_METHODS
        self.trace = trace
        self.start = start
        self.deadline = deadline
        self.forwarded = forwarded
        self.peer_id = peer_id
        if plan is None:
            plan = (plane.cluster,) if forwarded else plane.placement.plan(view, service)
        self.plan = plan
        self.ci = 0
        self.in_cluster = 0
        self.tries = 0
        self.tried: set[str] | None = None  # addresses tried (made on the first record)
        self.last = _NO_UPSTREAM if plan else _NO_CLUSTER
        self.target: Target | None = None
        self.tried_last: Target | None = None  # the last try's target (for the log)
        self.breaker: Breaker | None = None
        self.t0 = 0.0
        self.per_try = 0.0
        self.bytes_out = 0  # the relayed answer's body bytes (for the access log, counters)
        self.upstream_time: float | None = None  # the last try's time to the answer's head
        self.span_start = 0  # wall-clock ns of the try (only with a recorded span)
        plane.budget.on_request(service.name)

    @property
    def retries(self) -> int:
        return max(self.tries - 1, 0)

    # ------------------------------------------------------------ the next try
    def next_try(self) -> bool:
        """Choose the next try's target and take its breaker (``self.target``,
        ``self.breaker``); False when the plan has nothing left (``self.last`` says why)."""
        plane = self.plane
        plan = self.plan
        service = self.service
        name = service.name
        local = plane.cluster
        while self.ci < len(plan):
            cluster = plan[self.ci]
            target: Target | None
            tried = self.tried or _NOTHING
            if cluster != local:
                target = (
                    None
                    if self.forwarded
                    else plane.remote_target(self.view, cluster, upstream_protocol(service))
                )
                if target is not None and target.address in tried:
                    target = None
            else:
                target = plane.local_target(service, cluster, tried)
            if target is None:
                self.ci += 1
                self.in_cluster = 0
                continue
            breaker = plane.breakers.get(name, cluster, service.circuit_breaker)
            if not breaker.try_acquire():
                self.last = (503, f"circuit breaker open for {name} in {cluster}")
                self.ci += 1
                self.in_cluster = 0
                continue
            if self.tries and cluster != plan[0] and self.in_cluster == 0:
                plane.telemetry.failover(name, plan[0], cluster)
            self.begin_try(target, breaker)
            return True
        return False

    def begin_try(self, target: Target, breaker: Breaker) -> None:
        """A try to ``target`` goes out now (its breaker already granted)."""
        plane = self.plane
        self.target = self.tried_last = target
        self.breaker = breaker
        self.tries += 1
        self.in_cluster += 1
        per_try = self.service.retries.per_try_timeout
        if not target.remote:
            plane.balancer.started(target.address)
            if self.idempotent:
                per_try = plane.latency.per_try_timeout(target.address, per_try)
        self.per_try = per_try
        self.t0 = plane.clock()
        if self.trace.span is not None:
            self.span_start = time.time_ns()

    def try_span(self, status: int | None, error: FailureKind | None) -> None:
        """The CLIENT span of the try that just ended (when the request's span records)."""
        target = self.tried_last
        if self.trace.span is None or target is None:
            return
        self.plane.telemetry.upstream_span(
            self.trace, method=self.method.decode("latin-1"), service=self.service.name,
            cluster=target.cluster, address=target.address, start_ns=self.span_start,
            status=status, error=error.value if error is not None else None,
        )  # fmt: skip

    # ------------------------------------------------------------ after a try
    def record(self, ok: bool | None) -> None:
        """The current try is over: ``ok`` True (an answer below 500), False (the upstream
        failed: connect, reset, timeout, bad answer, 5xx) or None (the client's doing:
        it went away, was too slow or sent too much; counted against nothing)."""
        target = self.target
        breaker = self.breaker
        if target is None or breaker is None:
            return
        self.target = self.breaker = None
        plane = self.plane
        self.upstream_time = latency = plane.clock() - self.t0
        breaker.release(ok)
        address = target.address
        if ok:  # a success ends the exchange: no next try to exclude it from
            name = self.service.name
            if not target.remote:
                plane.balancer.finished(address, True)
                plane.latency.record(address, latency)
            plane.passive.record(name, target.cluster, True, latency)
            plane.placement.local_success(name, target.cluster)
            return
        tried = self.tried
        if tried is None:
            self.tried = {address}
        else:
            tried.add(address)
        if not target.remote:
            plane.balancer.finished(address, ok)
        if ok is None:
            return
        plane.passive.record(self.service.name, target.cluster, False, latency)
        plane.placement.local_failure(self.service.name, target.cluster)

    def retry(
        self,
        kind: FailureKind,
        *,
        status: int | None,
        sent: bool,
        replayable: bool,
        now: float,
        judged: bool = False,
    ) -> bool:
        """After a failed try (recorded): may the request be tried again? If so the plan
        advances (another endpoint of this cluster or the next cluster). ``judged``: a
        protocol's own rule found the answer retryable (a gRPC status in
        ``retries.grpcStatus``), in place of ``retries.on`` and the method's idempotence."""
        cfg = self.service.retries
        if self.tries > cfg.attempts:
            return False
        if sent and not replayable:
            return False
        if not judged and not retryable(
            method=self.method, kind=kind, status=status, conditions=cfg.on, request_sent=sent
        ):
            return False
        if kind is _STATUS and not self._more_targets():
            return False  # relay the upstream's own answer rather than nothing
        if now >= self.deadline:
            return False
        if not self.plane.budget.try_retry(self.service.name, cfg.budget_percent):
            return False
        self._advance()
        return True

    def _advance(self) -> None:
        plan = self.plan
        remote = plan[self.ci] != self.plane.cluster
        last_try = self.tries + 1 >= self.service.retries.attempts + 1
        if self.ci + 1 < len(plan) and (remote or self.in_cluster >= 2 or last_try):
            self.ci += 1
            self.in_cluster = 0

    def _more_targets(self) -> bool:
        plan = self.plan
        if self.ci + 1 < len(plan):
            return True
        cluster = plan[self.ci]
        if cluster != self.plane.cluster:
            return False
        eps = self.view.endpoints_of(self.service.name, cluster)
        return sum(1 for e in eps if e.routable) > len(self.tried or _NOTHING)
