"""Small trend series for the status page: requests/s, error rate and failovers of this
gateway over the last 15 minutes, from its own telemetry counters.

A ring buffer of cumulative totals (requests, 5xx answers, failovers), sampled at most
every ``interval`` seconds, *when the admin API is used* (probes, scrapes and the page
itself call :meth:`Trends.maybe_sample`): no task to run or stop, no cost when nobody
looks. A point is the change between two samples divided by the time between them, so
a gap (nobody asked for a while) gives one coarser point, never a wrong rate. A counter
that goes backwards (a restart) starts a new series.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

INTERVAL = 10.0  # seconds between samples, at least
WINDOW = 900.0  # seconds kept: 15 minutes


@dataclass(frozen=True, slots=True)
class Totals:
    requests: float
    errors: float  # answers with a 5xx status
    failovers: float


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float  # monotonic
    wall: float  # unix seconds, for the plot's axis
    totals: Totals


class Trends:
    def __init__(
        self,
        read: Callable[[], Totals],
        *,
        interval: float = INTERVAL,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._read = read
        self.interval = interval
        self.window = window
        self._clock = clock
        self._wall = wall
        self._samples: deque[_Sample] = deque(maxlen=int(window / interval) + 2)

    def maybe_sample(self) -> None:
        """Take a sample when the last one is ``interval`` old (cheap otherwise)."""
        now = self._clock()
        if self._samples and now - self._samples[-1].at < self.interval:
            return
        totals = self._read()
        last = self._samples[-1] if self._samples else None
        if last is not None and (
            totals.requests < last.totals.requests or totals.failovers < last.totals.failovers
        ):
            self._samples.clear()  # the counters restarted
        self._samples.append(_Sample(now, self._wall(), totals))
        while self._samples and now - self._samples[0].at > self.window + self.interval:
            self._samples.popleft()

    def series(self) -> dict[str, object]:
        """The points of the window, oldest first: one per pair of consecutive samples."""
        self.maybe_sample()
        points = []
        for a, b in itertools.pairwise(self._samples):
            seconds = b.at - a.at
            if seconds <= 0:
                continue
            requests = b.totals.requests - a.totals.requests
            errors = b.totals.errors - a.totals.errors
            failovers = b.totals.failovers - a.totals.failovers
            points.append(
                {
                    "at": round(b.wall, 3),
                    "seconds": round(seconds, 3),
                    "requests_per_second": round(requests / seconds, 3),
                    "error_rate": round(errors / requests, 4) if requests > 0 else 0.0,
                    "failovers": failovers,
                }
            )
        return {"interval_seconds": self.interval, "window_seconds": self.window, "points": points}
