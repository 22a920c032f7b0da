"""The query of ``GET /v1/health/global``: filters and paging, parsed once, strictly.

======================  ========================================================
parameter               meaning
======================  ========================================================
``cluster=a,b``         only these clusters (and the services that run there,
                        with their rows for these clusters only)
``service=x,y``         only these services (and the clusters that run them)
``state=unhealthy,...`` only clusters and services in one of these states
``q=text``              names (clusters: also region and cloud; services: also
                        route hosts) containing ``text``, case-insensitive
``limit=N``             at most N clusters and N services (default 100, max 1000)
``offset=N``            skip the first N of each list (paging)
======================  ========================================================

A page is chosen worst first (unhealthy, degraded, unknown, healthy), so the first page
always holds what needs attention; within a page the items keep their grouped order
(clusters by cloud, environment, tier, name; services by name). The summary always
covers the whole federation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from federation.model import HealthState

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_PARAM = 4096  # characters of one cluster= or service= filter
MAX_TEXT = 253

STATES = frozenset(s.value for s in HealthState)
PARAMETERS = ("cluster", "service", "state", "q", "limit", "offset")


class QueryError(ValueError):
    """A query parameter that cannot be honoured; the message is one line (a 400)."""


@dataclass(frozen=True, slots=True)
class HealthQuery:
    clusters: frozenset[str] | None = None
    services: frozenset[str] | None = None
    states: frozenset[str] | None = None
    search: str = ""
    limit: int = DEFAULT_LIMIT
    offset: int = 0

    @property
    def filtered(self) -> bool:
        return bool(self.clusters or self.services or self.states or self.search)

    def echo(self) -> dict[str, object]:
        """The query as the response repeats it (``filter``)."""
        return {
            "cluster": sorted(self.clusters) if self.clusters else None,
            "service": sorted(self.services) if self.services else None,
            "state": sorted(self.states) if self.states else None,
            "q": self.search or None,
        }


def _names(name: str, value: str) -> frozenset[str]:
    """Comma-separated names (blank ones dropped: ``cluster=,`` matches nothing)."""
    if not value:
        raise QueryError(f"query parameter {name!r} is empty")
    if len(value) > MAX_PARAM:
        raise QueryError(f"query parameter {name!r}: at most {MAX_PARAM} characters")
    return frozenset(v.strip() for v in value.split(",") if v.strip())


def _int(name: str, value: str, low: int, high: int) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 10:
        raise QueryError(f"query parameter {name!r} must be an integer {low}-{high}")
    number = int(value)
    if not low <= number <= high:
        raise QueryError(f"query parameter {name!r} must be an integer {low}-{high}")
    return number


def parse_query(params: Mapping[str, str]) -> HealthQuery:
    """The query from URL parameters; QueryError (a 400) on an unknown or bad one."""
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise QueryError(
            f"unknown query parameter {unknown[0][:40]!r} (known: {', '.join(PARAMETERS)})"
        )
    states = None
    if "state" in params:
        states = _names("state", params["state"])
        bad = sorted(states - STATES)
        if not states:
            raise QueryError("query parameter 'state' names no state")
        if bad:
            raise QueryError(f"unknown state {bad[0][:40]!r} (states: {', '.join(sorted(STATES))})")
    search = params.get("q", "").strip().lower()
    if len(search) > MAX_TEXT:
        raise QueryError(f"query parameter 'q': at most {MAX_TEXT} characters")
    return HealthQuery(
        clusters=_names("cluster", params["cluster"]) if "cluster" in params else None,
        services=_names("service", params["service"]) if "service" in params else None,
        states=states,
        search=search,
        limit=_int("limit", params["limit"], 1, MAX_LIMIT) if "limit" in params else DEFAULT_LIMIT,
        offset=_int("offset", params["offset"], 0, 10**9) if "offset" in params else 0,
    )
