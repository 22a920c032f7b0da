"""Cross-field checks of the manifest's DNS parts: zones, public entries, service ``dns``.

Like :mod:`federation.manifest.checks` they run on the raw YAML data and skip values
that are malformed on their own (the wire models report those).
"""

from __future__ import annotations

from typing import Any

from federation.manifest import values
from federation.manifest.source import Document, Path


def _items(value: Any) -> list[tuple[int, Any]]:
    return list(enumerate(value)) if isinstance(value, list) else []


def _host(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return values.check_route_host(value)
    except ValueError:
        return None


def zone_of(host: str, zones: list[str]) -> str | None:
    """The longest zone that ``host`` (exact or ``*.`` wildcard) lies in."""
    bare = host[2:] if host.startswith("*.") else host
    best = None
    for z in zones:
        if (bare == z or bare.endswith("." + z)) and (best is None or len(z) > len(best)):
            best = z
    return best


def check_dns(doc: Document, data: dict[Any, Any]) -> None:
    """Append every DNS cross-field problem of the manifest to ``doc.issues``."""
    zones = _check_zones(doc, data.get("zones"))
    entries: dict[str, bool] = {}  # cluster -> has a public entry
    for i, cluster in _items(data.get("clusters")):
        if not isinstance(cluster, dict):
            continue
        name = cluster.get("name")
        entry = cluster.get("publicEntry")
        if isinstance(name, str):
            entries[name] = isinstance(entry, dict)
        if isinstance(entry, dict) and ("addresses" in entry) == ("hostname" in entry):
            doc.add(
                ("clusters", i, "publicEntry"),
                "give exactly one of addresses: [IP, ...] or hostname: NAME",
            )
    for i, service in _items(data.get("services")):
        if isinstance(service, dict):
            _check_service(doc, ("services", i), service, zones, entries)


def _check_zones(doc: Document, raw: Any) -> list[str]:
    names: dict[str, int] = {}
    for i, z in _items(raw):
        if not isinstance(z, dict):
            continue
        name = _host(z.get("name"))
        if name is None or name.startswith("*"):
            continue
        path: Path = ("zones", i, "name")
        if name in names:
            doc.add(path, f"duplicate zone {name!r} (first at line {names[name]})")
            continue
        for other, line in names.items():
            if name.endswith("." + other) or other.endswith("." + name):
                doc.add(
                    path,
                    f"zone {name!r} overlaps zone {other!r} (line {line}): serve one zone "
                    "and put the names of the other in it",
                )
        names[name] = doc.mark(path)[0]
    return list(names)


def _check_service(
    doc: Document,
    base: Path,
    service: dict[Any, Any],
    zones: list[str],
    entries: dict[str, bool],
) -> None:
    own = [c for _, c in _items(service.get("clusters")) if isinstance(c, str)]
    hosts = [_host(r.get("host")) for _, r in _items(service.get("routes")) if isinstance(r, dict)]
    served = [h for h in hosts if h is not None and zone_of(h, zones) is not None]
    dns = service.get("dns")
    if served:
        missing = [c for c in own if c in entries and not entries[c]]
        if missing and len(missing) == len([c for c in own if c in entries]):
            doc.warn(
                (*base, "clusters"),
                f"{served[0]} is in a DNS zone but no cluster of the service has a "
                "publicEntry: DNS answers no address for it",
            )
    elif isinstance(dns, dict) and dns and zones:
        doc.warn((*base, "dns"), "no route host of this service is in a zone: dns is unused")
    if not isinstance(dns, dict):
        return
    dpath: Path = (*base, "dns")
    strategy = dns.get("strategy", "healthiest")
    for key, wanted in (("order", "ordered"), ("nearest", "nearest")):
        if key in dns and strategy != wanted:
            doc.add((*dpath, key), f"{key} is only allowed with strategy {wanted!r}", key=True)
    if strategy == "nearest" and not dns.get("nearest"):
        doc.add(
            (*dpath, "strategy") if "nearest" not in dns else (*dpath, "nearest"),
            "strategy 'nearest' needs nearest: [{cidr: ..., clusters: [...]}, ...]",
        )
    _check_refs(doc, (*dpath, "order"), dns.get("order"), own)
    seen: dict[str, int] = {}
    for j, rule in _items(dns.get("nearest")):
        if not isinstance(rule, dict):
            continue
        _check_refs(doc, (*dpath, "nearest", j, "clusters"), rule.get("clusters"), own)
        cidr = rule.get("cidr")
        if isinstance(cidr, str):
            try:
                key = str(values.parse_network(cidr))
            except ValueError:
                continue
            if key in seen:
                doc.add(
                    (*dpath, "nearest", j, "cidr"),
                    f"network {key} is already listed (line {seen[key]})",
                )
            else:
                seen[key] = doc.mark((*dpath, "nearest", j, "cidr"))[0]


def _check_refs(doc: Document, path: Path, raw: Any, own: list[str]) -> None:
    listed: set[str] = set()
    for k, cluster in _items(raw):
        if not isinstance(cluster, str):
            continue
        if cluster in listed:
            doc.add((*path, k), f"cluster {cluster!r} is listed twice")
        listed.add(cluster)
        if cluster not in own:
            shown = ", ".join(own) if own else "none"
            doc.add(
                (*path, k), f"cluster {cluster!r} is not one of this service's clusters ({shown})"
            )
