"""Checks that need more than one value: names, references, and related fields.

They run on the raw YAML data (not the validated models), so they report problems even
where some other part of the same object is malformed; a value that is itself malformed
is skipped here, since the wire models already report it.
"""

from __future__ import annotations

from typing import Any

from federation.manifest import route_rules, values
from federation.manifest.dns_checks import check_dns
from federation.manifest.source import Document, Path

_DEFAULTS = {
    ("healthCheck", "interval"): 1.0,
    ("healthCheck", "timeout"): 0.5,
    ("retries", "perTryTimeout"): 2.0,
    ("timeouts", "connect"): 1.0,
    ("timeouts", "request"): 30.0,
}


def _items(value: Any) -> list[tuple[int, Any]]:
    return list(enumerate(value)) if isinstance(value, list) else []


def _section(service: dict[Any, Any], name: str) -> dict[Any, Any]:
    section = service.get(name)
    return section if isinstance(section, dict) else {}


def _duration(service: dict[Any, Any], section: str, key: str) -> float | None:
    """The parsed duration, its default when absent, None when malformed (reported elsewhere)."""
    raw_section = service.get(section)
    if raw_section is None:
        return _DEFAULTS[(section, key)]
    if not isinstance(raw_section, dict):
        return None
    if key not in raw_section:
        return _DEFAULTS[(section, key)]
    try:
        return values.parse_duration(raw_section[key])
    except ValueError:
        return None


def _seconds(value: float) -> str:
    if value >= 1 and value == int(value):
        return f"{int(value)}s"
    if value < 1:
        return f"{value * 1000:g}ms"
    return f"{value:g}s"


def check(doc: Document) -> None:
    """Append every cross-field problem of ``doc`` to ``doc.issues``."""
    data = doc.data
    if not isinstance(data, dict):
        return
    clusters = _check_clusters(doc, data.get("clusters"))
    routes: dict[tuple[str, str, str], tuple[str, int]] = {}
    names: dict[str, int] = {}
    services = {
        s["name"] for _, s in _items(data.get("services"))
        if isinstance(s, dict) and isinstance(s.get("name"), str)
    }  # fmt: skip
    zones = {
        z["name"].lower() for _, z in _items(data.get("zones"))
        if isinstance(z, dict) and isinstance(z.get("name"), str)
    }  # fmt: skip
    for i, service in _items(data.get("services")):
        if not isinstance(service, dict):
            continue
        base: Path = ("services", i)
        name = service.get("name")
        if isinstance(name, str):
            if name in names:
                doc.add(
                    (*base, "name"),
                    f"duplicate service name {name!r} (first at line {names[name]})",
                )
            else:
                names[name] = doc.mark((*base, "name"))[0]
        _check_service(doc, base, service, clusters, routes, services)
        _check_acme(doc, base, service, zones)
    check_dns(doc, data)


def _check_clusters(doc: Document, clusters: Any) -> dict[str, dict[Any, Any]]:
    """Cluster names and URLs; returns the clusters by name."""
    by_name: dict[str, dict[Any, Any]] = {}
    names: dict[str, int] = {}
    east_west: dict[str, int] = {}
    for i, cluster in _items(clusters):
        if not isinstance(cluster, dict):
            continue
        name = cluster.get("name")
        path: Path = ("clusters", i, "name")
        if isinstance(name, str):
            if name in names:
                doc.add(path, f"duplicate cluster name {name!r} (first at line {names[name]})")
            else:
                names[name] = doc.mark(path)[0]
                by_name[name] = cluster
        gateway = cluster.get("gateway")
        url = gateway.get("eastWest") if isinstance(gateway, dict) else None
        if isinstance(url, str):
            key = url.lower().rstrip("/")
            upath: Path = ("clusters", i, "gateway", "eastWest")
            if key in east_west:
                doc.add(
                    upath,
                    f"{url!r} is already the east-west URL of another cluster "
                    f"(line {east_west[key]})",
                )
            else:
                east_west[key] = doc.mark(upath)[0]
    return by_name


def _known(known: set[str]) -> str:
    return ", ".join(sorted(known)) if known else "none"


def _check_service(
    doc: Document,
    base: Path,
    service: dict[Any, Any],
    clusters: dict[str, dict[Any, Any]],
    routes: dict[tuple[str, str, str], tuple[str, int]],
    services: set[str],
) -> None:
    known = set(clusters)
    raw_name = service.get("name")
    name = raw_name if isinstance(raw_name, str) else f"#{base[-1]}"
    seen: set[str] = set()
    for j, cluster in _items(service.get("clusters")):
        if not isinstance(cluster, str):
            continue
        path: Path = (*base, "clusters", j)
        if cluster in seen:
            doc.add(path, f"cluster {cluster!r} is listed twice")
        seen.add(cluster)
        if cluster not in known:
            doc.add(path, f"unknown cluster {cluster!r} (clusters: {_known(known)})")
    own_or_all = seen

    endpoints = service.get("endpoints")
    if isinstance(endpoints, dict):
        for cluster, addresses in endpoints.items():
            path = (*base, "endpoints", cluster)
            if not isinstance(cluster, str):
                continue
            if cluster not in known:
                doc.add(path, f"unknown cluster {cluster!r} (clusters: {_known(known)})", key=True)
            elif cluster not in own_or_all:
                doc.add(
                    path,
                    f"cluster {cluster!r} is not one of this service's clusters "
                    f"({_known(own_or_all)})",
                    key=True,
                )
            listed: set[str] = set()
            for k, address in _items(addresses):
                if isinstance(address, str):
                    if address in listed:
                        doc.add((*path, k), f"endpoint {address!r} is listed twice")
                    listed.add(address)

    _check_failover(doc, base, service, known, own_or_all)

    static = set(endpoints) if isinstance(endpoints, dict) else set()
    for j, cluster in _items(service.get("clusters")):
        if (
            isinstance(cluster, str)
            and cluster in clusters
            and cluster not in static
            and clusters[cluster].get("kubernetes") is None
        ):
            doc.warn(
                (*base, "clusters", j),
                f"cluster {cluster!r} has no kubernetes discovery and the service lists "
                "no endpoints for it: it will never have an endpoint there",
            )

    interval = _duration(service, "healthCheck", "interval")
    timeout = _duration(service, "healthCheck", "timeout")
    if interval is not None and timeout is not None and timeout >= interval:
        doc.add(
            (*base, "healthCheck", "timeout"),
            f"must be shorter than the interval ({_seconds(interval)}), got {_seconds(timeout)}",
        )
    request = _duration(service, "timeouts", "request")
    per_try = _duration(service, "retries", "perTryTimeout")
    if request is not None and per_try is not None and per_try > request:
        doc.add(
            (*base, "retries", "perTryTimeout"),
            f"must not exceed timeouts.request ({_seconds(request)}), got {_seconds(per_try)}",
        )
    retries = _section(service, "retries")
    if "grpcStatus" in retries and service.get("protocol", "http") != "grpc":
        doc.add(
            (*base, "retries", "grpcStatus"),
            "applies to gRPC calls only: set protocol: grpc on the service, or remove it",
        )
    connect = _duration(service, "timeouts", "connect")
    if request is not None and connect is not None and connect > request:
        doc.add(
            (*base, "timeouts", "connect"),
            f"must not exceed timeouts.request ({_seconds(request)}), got {_seconds(connect)}",
        )

    for j, route in _items(service.get("routes")):
        if not isinstance(route, dict):
            continue
        path = (*base, "routes", j)
        route_rules.check_route(doc, path, route, services)
        host = route.get("host")
        prefix = route.get("pathPrefix", "/")
        if not isinstance(host, str) or not isinstance(prefix, str):
            continue
        try:
            # "/api" and "/api/" match the same requests but "/api" itself: one route
            key = (
                values.check_route_host(host),
                prefix.rstrip("/") or "/",
                route_rules.conditions_key(route.get("match")),
            )
        except ValueError:
            continue
        if key in routes:
            other, line = routes[key]
            doc.add(
                path,
                f"route {key[0]}{prefix} is already served by service {other!r} (line {line})"
                + (" with the same match conditions" if key[2] else ""),
            )
        else:
            routes[key] = (name, doc.mark(path)[0])


def _check_failover(
    doc: Document, base: Path, service: dict[Any, Any], known: set[str], own: set[str]
) -> None:
    failover = service.get("failover")
    if not isinstance(failover, dict):
        return
    policy = failover.get("policy", "healthiest")
    order = failover.get("order")
    fpath: Path = (*base, "failover")
    if policy == "ordered":
        if order is None or order == []:
            doc.add(
                (*fpath, "order") if order is not None else (*fpath, "policy"),
                "policy 'ordered' needs a non-empty order: [cluster, ...]",
            )
    elif policy == "healthiest" and order is not None:
        doc.add(
            (*fpath, "order"),
            "order is only allowed with policy 'ordered' (healthiest ranks clusters by health)",
            key=True,
        )
        return
    seen: set[str] = set()
    for k, cluster in _items(order):
        if not isinstance(cluster, str):
            continue
        path: Path = (*fpath, "order", k)
        if cluster in seen:
            doc.add(path, f"cluster {cluster!r} is listed twice")
        seen.add(cluster)
        if cluster not in known:
            doc.add(path, f"unknown cluster {cluster!r} (clusters: {_known(known)})")
        elif cluster not in own:
            doc.add(
                path, f"cluster {cluster!r} is not one of this service's clusters ({_known(own)})"
            )


def _check_acme(doc: Document, base: Path, service: dict[Any, Any], zones: set[str]) -> None:
    """``tls: acme`` on a wildcard host: HTTP-01 and TLS-ALPN-01 cannot prove a wildcard
    (RFC 8555 section 7.1.3); DNS-01 can when the host lies in one of the ``zones``
    fedgate's own DNS serves (docs/tls.md)."""
    for j, route in _items(service.get("routes")):
        if not isinstance(route, dict):
            continue
        host = route.get("host")
        tls = route.get("tls", service.get("tls"))
        if tls == "acme" and isinstance(host, str) and host.startswith("*."):
            labels = host.lower().rstrip(".").split(".")[1:]
            if any(".".join(labels[i:]) in zones for i in range(len(labels))):
                continue
            doc.add(
                (*base, "routes", j, "host"),
                f"wildcard host {host!r} cannot have tls: acme outside the zones (http-01 "
                "and tls-alpn-01 cannot prove a wildcard; dns-01 needs the host in one of "
                f"the manifest's zones: {_known(zones)})",
            )
