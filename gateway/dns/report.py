"""What DNS answers, for people: the ``dns`` section of global health and ``explain --dns``.

Both read the same :class:`~gateway.dns.answers.DnsAnswers` the listener answers from.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from federation.model import RoutingView
from gateway.dns.answers import DnsAnswers, IPAddress, Selection
from gateway.dns.resolve import Resolution, resolve


def _selection(sel: Selection | None) -> dict[str, Any] | None:
    if sel is None:
        return None
    return {
        "service": sel.service,
        "strategy": sel.strategy,
        "clusters": list(sel.clusters),
        "ipv4": list(sel.ipv4),
        "ipv6": list(sel.ipv6),
        "cname": sel.cname or None,
        "ttl": sel.ttl,
        "reason": sel.reason,
        "client_scope": sel.scope,
    }


def _resolution(res: Resolution) -> dict[str, Any]:
    return {
        "rcode": res.rcode,
        "authoritative": res.authoritative,
        "answer": [
            {"name": r.name, "type": r.type, "ttl": r.ttl, "data": list(r.data)} for r in res.answer
        ],
        "why": res.why,
    }


def summary(answers: DnsAnswers, view: RoutingView, *, listener: str = "") -> dict[str, Any]:
    """The ``dns`` section of ``/v1/health/global``: zones, name servers, and what each
    service's hosts resolve to now (for ``nearest``: a client matching no network)."""
    index = answers.index(view)
    zones = [
        {
            "zone": name,
            "ns": [{"name": ns, "addresses": list(index.glue.get(ns, ()))} for ns in info.ns],
            "serial": index.serial,
        }
        for name, info in sorted(index.zones.items())
    ]
    hosts: dict[str, list[str]] = {}
    for host, (svc, _) in index.exact.items():
        hosts.setdefault(svc, []).append(host)
    for suffix, (svc, _) in index.wild.items():
        hosts.setdefault(svc, []).append("*" + suffix)
    services = []
    for name in sorted(index.services):
        sel = answers.select(view, index.services[name])
        row = {"service": name, "hosts": sorted(hosts.get(name, []))}
        services.append({**row, **(_selection(sel) or {})})
    return {"enabled": True, "listener": listener, "zones": zones, "services": services}


def parse_client(text: str | None) -> IPAddress | None:
    """``--client``: an address or a CIDR (its network address); ValueError when neither."""
    if not text:
        return None
    try:
        return ipaddress.ip_network(text, strict=False).network_address
    except ValueError:
        raise ValueError(f"not an IP address or CIDR: {text!r}") from None


def explain(
    answers: DnsAnswers, view: RoutingView, name: str, client: IPAddress | None
) -> dict[str, Any]:
    """The DNS answer to ``name`` (A and AAAA) for ``client``, and why: the zone, the
    owning service and strategy, every candidate cluster as placement sees it."""
    host = name.strip().lower().rstrip(".")
    a = resolve(answers, view, host, "A", client)
    aaaa = resolve(answers, view, host, "AAAA", client)
    out: dict[str, Any] = {
        "name": host,
        "client": str(client) if client is not None else None,
        "revision": view.revision,
        "config_revision": view.config_revision,
        "view_source": view.source,
        "zone": a.zone or None,
        "A": _resolution(a),
        "AAAA": _resolution(aaaa),
        "selection": _selection(a.selection),
    }
    index = answers.index(view)
    if a.selection is not None:
        service = index.services.get(a.selection.service)
        if service is not None:
            rows = answers.placement.explain(view, service)
            for row in rows:
                c = view.clusters.get(str(row["cluster"]))
                entry = c.public_entry if c is not None else None
                row["public_entry"] = (
                    None if entry is None else (entry.hostname or ", ".join(entry.addresses))
                )
                row["answered"] = row["cluster"] in a.selection.clusters
            out["candidates"] = rows
    return out


class DnsReport:
    """The admin API's view of one listener (``federation.api.DnsAdmin``)."""

    def __init__(self, answers: DnsAnswers, holder: Any, server: Any = None) -> None:
        self.answers = answers
        self.holder = holder
        self.server = server

    def summary(self) -> dict[str, Any]:
        status = self.server.status() if self.server is not None else {}
        out = summary(self.answers, self.holder.view, listener=str(status.get("listen", "")))
        out["stats"] = status
        return out

    def explain(self, name: str, client: str | None) -> dict[str, Any]:
        return explain(self.answers, self.holder.view, name, parse_client(client))
