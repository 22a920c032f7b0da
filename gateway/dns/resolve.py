"""One DNS question against one routing view: what an authoritative server says.

:func:`resolve` turns (name, type, client) into a :class:`Resolution` (the rcode, the
records by section, and why), free of any wire format, so the listener
(``gateway/dns/wire.py``) and ``fedgate explain --dns`` give the same answer.

- outside every zone: REFUSED (not an open resolver);
- a name that does not exist in the zone: NXDOMAIN with the zone's SOA;
- a name without records of the type asked: NOERROR, no answer, the SOA (NODATA);
- the apex: SOA, NS (with the glue of the NS names in the additional section);
- ``ns-<cluster>.<zone>``: A/AAAA of that cluster's live DNS listeners;
- ``_acme-challenge.<name>`` while an ACME DNS-01 order is pending: its TXT values
  (``RoutingView.acme_txt``, published through etcd; docs/tls.md), before any route;
- a service's route host: A/AAAA of the clusters :mod:`gateway.dns.answers` selects, or
  a CNAME to a hostname public entry (for any type, as RFC 1034 has it).
"""

from __future__ import annotations

from dataclasses import dataclass

from federation.model import RoutingView
from gateway.dns.answers import DnsAnswers, IPAddress, Selection
from gateway.dns.names import ZoneInfo

NOERROR, NXDOMAIN, REFUSED = "NOERROR", "NXDOMAIN", "REFUSED"
A, AAAA, CNAME, NS, SOA, ANY, TXT = "A", "AAAA", "CNAME", "NS", "SOA", "ANY", "TXT"
ACME_TXT_TTL = 0  # a DNS-01 value lives for one order: never cached
SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 60, 10, 3600


@dataclass(frozen=True, slots=True)
class Record:
    name: str
    type: str  # A | AAAA | CNAME | NS | SOA | TXT
    ttl: int
    data: tuple[str, ...]  # A/AAAA/NS: one item per record; CNAME: one; SOA: the fields


@dataclass(frozen=True, slots=True)
class Resolution:
    rcode: str
    authoritative: bool
    answer: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()
    zone: str = ""
    why: str = ""
    selection: Selection | None = None
    scope: int = 0  # EDNS Client Subnet scope prefix length


def soa_record(info: ZoneInfo, serial: int) -> Record:
    z = info.zone
    mname = info.ns[0] if info.ns else f"ns.{z.name}"
    fields = (
        mname,
        info.hostmaster,
        str(serial),
        str(SOA_REFRESH),
        str(SOA_RETRY),
        str(SOA_EXPIRE),
        str(int(z.negative_ttl)),
    )
    return Record(z.name, SOA, int(z.ttl), fields)


def _negative(info: ZoneInfo, serial: int) -> tuple[Record, ...]:
    soa = soa_record(info, serial)
    ttl = min(soa.ttl, int(info.zone.negative_ttl))  # RFC 2308: min(SOA TTL, SOA minimum)
    return (Record(soa.name, SOA, ttl, soa.data),)


def _addresses(name: str, qtype: str, ttl: int, addresses: tuple[str, ...]) -> tuple[Record, ...]:
    v6 = qtype == AAAA
    picked = tuple(a for a in addresses if (":" in a) is v6)  # canonical addresses
    return (Record(name, qtype, ttl, picked),) if picked else ()


def resolve(
    answers: DnsAnswers,
    view: RoutingView,
    name: str,
    qtype: str,
    client: IPAddress | None = None,
) -> Resolution:
    """The authoritative answer to ``name`` (lower case, no trailing dot) / ``qtype``."""
    index = answers.index(view)
    info = index.zone_of(name)
    if info is None:
        return Resolution(REFUSED, False, why="outside the zones this server is authoritative for")
    zname = info.zone.name
    txt = view.acme_txt.get(name) if view.acme_txt else None
    if txt is not None:  # an ACME DNS-01 challenge: before any (wildcard) route host
        why = "ACME DNS-01 challenge"
        if qtype == TXT:
            return Resolution(
                NOERROR, True, answer=(Record(name, TXT, ACME_TXT_TTL, txt),), zone=zname, why=why
            )
        return Resolution(
            NOERROR, True, authority=_negative(info, index.serial), zone=zname,
            why=f"{why}; no {qtype} record",
        )  # fmt: skip
    owner = index.owner(name, info)
    if owner is None:
        return Resolution(
            NXDOMAIN,
            True,
            authority=_negative(info, index.serial),
            zone=zname,
            why="no such name in the zone",
        )
    records: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()
    selection: Selection | None = None
    why = ""
    if qtype == ANY:  # RFC 8482: one RRset is enough, no amplification
        qtype = A
    if name == zname and qtype in (SOA, NS):
        if qtype == SOA:
            records = (soa_record(info, index.serial),)
        elif info.ns:
            records = (Record(zname, NS, int(info.zone.ttl), info.ns),)
            glue: list[Record] = []
            for ns in info.ns:
                for t in (A, AAAA):
                    glue.extend(_addresses(ns, t, int(info.zone.ttl), index.glue.get(ns, ())))
            additional = tuple(glue)
        why = "zone apex"
    elif owner.glue:
        why = "a name server of the zone"
        if qtype in (A, AAAA):
            records = _addresses(name, qtype, int(info.zone.ttl), owner.glue)
    elif owner.service:
        service = index.services.get(owner.service)
        if service is not None:
            selection = answers.select(view, service, client)
            why = f"route host {owner.host} of service {owner.service}"
            if selection.cname:
                records = (Record(name, CNAME, selection.ttl, (selection.cname + ".",)),)
            elif qtype in (A, AAAA):
                both = selection.ipv4 + selection.ipv6
                records = _addresses(name, qtype, selection.ttl, both)
    else:
        why = "a name that exists without records (an empty non-terminal)"
    if not records:
        return Resolution(
            NOERROR,
            True,
            authority=_negative(info, index.serial),
            zone=zname,
            why=why + f"; no {qtype} record",
            selection=selection,
            scope=selection.scope if selection is not None else 0,
        )
    return Resolution(
        NOERROR,
        True,
        answer=records,
        additional=additional,
        zone=zname,
        why=why,
        selection=selection,
        scope=selection.scope if selection is not None else 0,
    )
