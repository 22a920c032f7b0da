"""The decision trace behind ``GET /v1/routes/explain`` and ``fedgate explain``: the routes
considered and why, the route taken with its rules, the candidate clusters and the plan,
computed from the gateway's own view and route table (the composition root wires it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def explain_request(
    view: Any,
    placement: Any,
    *,
    host: str,
    path: str,
    method: str,
    origin: str,
    headers: Sequence[tuple[str, str]] = (),
    table: Any = None,
) -> dict[str, Any]:
    """The decision trace of one request: the routes considered and why, the route taken
    and its rules, candidates with scores and reasons, revision. ``path`` may carry a
    query string (route conditions may look at it); ``table`` is the route table of
    ``view`` when the caller has it."""
    from gateway.routing import RouteTable
    from gateway.rules import describe_route

    out: dict[str, Any] = {
        "request": {"host": host, "path": path, "method": method, "from": origin},
        "revision": view.revision,
        "config_revision": view.config_revision,
        "view_source": view.source,
        "stale": view.stale,
    }
    if origin not in view.clusters:
        out["error"] = f"unknown cluster {origin!r}"
        return out
    only_path, _, query = path.partition("?")
    raw_headers = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers]
    if table is None:  # the serving gateway's own table when it has one (built per view)
        table = RouteTable.build(view)
    match, considered = table.explain(
        host.lower(), only_path, method, raw_headers, query.encode("latin-1")
    )
    out["considered"] = considered
    if match is None:
        out["route"] = None
        out["decision"] = "404: no registered route for this host and path"
        return out
    service = match.pick(raw_headers)
    out["route"] = {
        "service": match.service.name,
        "host": match.route.host,
        "pathPrefix": match.route.path_prefix,
        "rules": describe_route(match),
    }
    if match.route.redirect is not None:
        out["decision"] = "answered by the gateway with a redirect (no backend)"
        return out
    if service.name != match.service.name:
        out["route"]["backend"] = service.name
    out["candidates"] = placement.explain(view, service)
    plan = placement.plan(view, service)
    out["plan"] = list(plan)
    if not plan:
        out["decision"] = "503: no cluster can serve this service"
    elif plan[0] == origin:
        out["decision"] = f"served in {origin} (local endpoints)"
    else:
        out["decision"] = f"forwarded from {origin} to {plan[0]} over east-west mutual TLS"
    return out
