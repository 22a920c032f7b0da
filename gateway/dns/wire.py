"""DNS messages on the wire (dnspython): a query's bytes in, the response's bytes out.

:class:`Responder` parses a query, asks :func:`gateway.dns.resolve.resolve` and packs
the answer. It is synchronous and never raises: a packet that is not a well-formed DNS
query (unparsable, a response, no question) is *dropped* and counted; a query we do not
serve gets an error rcode (FORMERR, NOTIMP, REFUSED, BADVERS).

- EDNS(0) (RFC 6891): the response carries an OPT record when the query did; a UDP
  answer fits in the client's advertised payload, at most :data:`MAX_UDP_PAYLOAD`
  (1232, the DNS flag day 2020 size), else 512 without EDNS; an EDNS version above 0
  gets BADVERS.
- Truncation: an answer too big for UDP goes out empty with TC set; the client asks
  again over TCP (64 KiB).
- EDNS Client Subnet (RFC 7871): the client network steers ``nearest`` and is echoed
  with the scope prefix length the answer depends on (0 when it depends on none).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from federation.logging import get_logger
from federation.model import RoutingView
from gateway.dns.answers import DnsAnswers, IPAddress
from gateway.dns.resolve import NXDOMAIN, REFUSED, Record, Resolution, resolve

log = get_logger(__name__)

MAX_UDP_PAYLOAD = 1232
MIN_UDP_PAYLOAD = 512
TCP_MAX = 65535
MAX_PACKED = 4096  # packed answers kept for repeated questions
_SERVED = {
    dns.rdatatype.A: "A",
    dns.rdatatype.AAAA: "AAAA",
    dns.rdatatype.CNAME: "CNAME",
    dns.rdatatype.NS: "NS",
    dns.rdatatype.SOA: "SOA",
    dns.rdatatype.ANY: "ANY",
}
_RCODES = {"NOERROR": dns.rcode.NOERROR, NXDOMAIN: dns.rcode.NXDOMAIN, REFUSED: dns.rcode.REFUSED}


@dataclass(slots=True)
class DnsStats:
    """Counters of one listener (``/v1/status``, global health)."""

    queries: int = 0
    udp: int = 0
    tcp: int = 0
    malformed: int = 0  # dropped: not a well-formed query
    truncated: int = 0
    rate_limited: int = 0  # dropped by response-rate limiting
    slipped: int = 0  # sent truncated by response-rate limiting
    rcodes: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "queries": self.queries,
            "udp": self.udp,
            "tcp": self.tcp,
            "malformed": self.malformed,
            "truncated": self.truncated,
            "rate_limited": self.rate_limited,
            "slipped": self.slipped,
            "rcodes": dict(sorted(self.rcodes.items())),
        }


def _rdatas(rec: Record) -> tuple[dns.rdata.Rdata, ...]:
    rdtype = dns.rdatatype.from_text(rec.type)
    if rec.type == "SOA":
        texts = [" ".join(f"{d}." if i < 2 else d for i, d in enumerate(rec.data))]
    elif rec.type == "NS":
        texts = [f"{d}." for d in rec.data]
    elif rec.type == "TXT":  # ACME DNS-01 values: base64url, quoted as one string each
        texts = [f'"{d}"' for d in rec.data]
    else:
        texts = list(rec.data)
    return tuple(dns.rdata.from_text(dns.rdataclass.IN, rdtype, t) for t in texts)


def _shape(records: tuple[Record, ...], name: str) -> tuple[object, ...]:
    """The records with the question's name left out (what a template may reuse)."""
    return tuple(("@" if r.name == name else r.name, r.type, r.ttl, r.data) for r in records)


def question_name_end(wire: bytes) -> int:
    """The offset just past the question's name (uncompressed labels from offset 12), or
    -1 when the packet is too short or the name is not plain labels."""
    pos = 12
    size = len(wire)
    while pos < size:
        n = wire[pos]
        if n == 0:
            return pos + 1
        if n > 63:
            return -1
        pos += n + 1
    return -1


def packed_key(wire: bytes, tcp: bool) -> tuple[bool, bytes] | None:
    """The cache key of a query: everything after the ID, the question's name lower-cased
    (resolvers randomise its letter case, RFC draft 0x20), or None when not plain."""
    end = question_name_end(wire)
    if end < 0:
        return None
    return tcp, wire[2:12] + wire[12:end].lower() + wire[end:]


def client_subnet(query: dns.message.Message) -> dns.edns.ECSOption | None:
    for opt in query.options:
        if isinstance(opt, dns.edns.ECSOption):
            return opt
    return None


class Responder:
    """Query bytes -> response bytes (or None: dropped), over the current view."""

    def __init__(self, answers: DnsAnswers) -> None:
        self.answers = answers
        self.stats = DnsStats()
        self._rrsets: dict[Record, dns.rrset.RRset] = {}
        self._rdata: dict[tuple[str, tuple[str, ...]], tuple[dns.rdata.Rdata, ...]] = {}
        # (tcp, query bytes after the ID) -> (service, selection, response after the ID,
        # rcode, end of the question name): a repeated question over the same view and
        # the same selection gets the packed answer again without parsing (the selection
        # is asked again, cheaply, so an answer never outlives the plan it came from); a
        # new view empties it, so no old view is kept alive
        self._packed: dict[tuple[bool, bytes], tuple[Any, Any, bytes, str, int]] = {}
        self._packed_view: RoutingView | None = None
        # the shape of a response (all but the question's name) -> (its bytes with a
        # placeholder name of the same length, truncated?): a new name of a known shape
        # (a wildcard host, NXDOMAIN) costs the parse and the lookup, not a dnspython build
        self._templates: dict[tuple[object, ...], tuple[bytes, bool]] = {}

    def _cached(self, rec: Record, qname: dns.name.Name | None = None) -> dns.rrset.RRset:
        """The RRset of ``rec``; an answer at the question's name (which may be any name
        under a wildcard) is built on the parsed question name from cached rdata."""
        if qname is not None:
            key = (rec.type, rec.data)
            rdatas = self._rdata.get(key)
            if rdatas is None:
                if len(self._rdata) > MAX_PACKED:
                    self._rdata.clear()
                rdatas = self._rdata[key] = _rdatas(rec)
            return dns.rrset.from_rdata_list(qname, rec.ttl, rdatas)
        rrset = self._rrsets.get(rec)
        if rrset is None:
            if len(self._rrsets) > MAX_PACKED:
                self._rrsets.clear()
            rrset = self._rrsets[rec] = dns.rrset.from_rdata_list(
                dns.name.from_text(rec.name), rec.ttl, _rdatas(rec)
            )
        return rrset

    def respond(
        self, view: RoutingView, wire: bytes, peer: str, *, tcp: bool
    ) -> tuple[bytes | None, str]:
        """(response bytes or None when dropped, rcode name) for one query."""
        if view is not self._packed_view:  # a new view: nothing packed before holds
            self._packed.clear()
            self._packed_view = view
        key = packed_key(wire, tcp)
        hit = self._packed.get(key) if key is not None else None
        if hit is not None:
            service, selection, tail, rcode, qend = hit
            if selection is None or self.answers.select(view, service) is selection:
                self.stats.queries += 1
                # the cached answer with this query's ID and question (its letter case)
                return wire[:2] + tail[:10] + wire[12:qend] + tail[qend - 2 :], rcode
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # any malformed packet: dropped, counted, never a crash
            self.stats.malformed += 1
            return None, "malformed"
        if query.flags & dns.flags.QR or len(query.question) != 1:
            self.stats.malformed += 1
            return None, "malformed"
        self.stats.queries += 1
        try:
            return self._respond(view, query, wire, peer, tcp=tcp)
        except Exception as exc:  # a bug must not take the listener down: SERVFAIL
            log.warning("dns.answer_failed", name=str(query.question[0].name), error=repr(exc))
            try:
                return self._error(query, dns.rcode.SERVFAIL), "SERVFAIL"
            except Exception:
                self.stats.malformed += 1
                return None, "malformed"

    def _error(self, query: dns.message.Message, rcode: dns.rcode.Rcode) -> bytes:
        response = dns.message.make_response(query, our_payload=MAX_UDP_PAYLOAD)
        response.set_rcode(rcode)
        return response.to_wire()

    def _respond(
        self, view: RoutingView, query: dns.message.Message, wire: bytes, peer: str, *, tcp: bool
    ) -> tuple[bytes | None, str]:
        if query.edns > 0:
            response = dns.message.make_response(query, our_payload=MAX_UDP_PAYLOAD)
            response.use_edns(0, 0, MAX_UDP_PAYLOAD)
            response.set_rcode(dns.rcode.BADVERS)
            return response.to_wire(), "BADVERS"
        if query.opcode() != dns.opcode.QUERY:
            return self._error(query, dns.rcode.NOTIMP), "NOTIMP"
        q = query.question[0]
        if q.rdclass != dns.rdataclass.IN:
            return self._error(query, dns.rcode.REFUSED), "REFUSED"
        ecs = client_subnet(query) if query.edns == 0 else None
        client: IPAddress | None = None
        try:
            client = ipaddress.ip_address(ecs.address if ecs is not None else peer)
        except ValueError:
            client = None
        name = q.name.to_text(omit_final_dot=True).lower()
        qtype = _SERVED.get(q.rdtype, dns.rdatatype.to_text(q.rdtype))
        res = resolve(self.answers, view, name, qtype, client)
        qend = question_name_end(wire)
        if qend < 0 or qend + 4 > len(wire):  # an unusual question encoding: build it
            out, truncated = self._build(query, res, ecs, q.name, name, tcp=tcp)
        else:
            # the response's shape: everything but the question's name, which the packed
            # template holds as a placeholder of the same length (so no name compresses
            # against it and the bytes after it do not depend on it)
            shape = (
                tcp,
                wire[2:12],
                qend,
                wire[qend:],
                res.rcode,
                res.authoritative,
                res.scope,
                _shape(res.answer, name),
                _shape(res.authority, name),
                _shape(res.additional, name),
            )
            template = self._templates.get(shape)
            if template is None:
                if len(self._templates) >= MAX_PACKED:
                    self._templates.clear()
                placeholder = dns.name.Name([b"-" * len(label) for label in q.name.labels])
                template = self._templates[shape] = self._build(
                    query, res, ecs, placeholder, name, tcp=tcp
                )
            body, truncated = template
            out = wire[:2] + body[2:12] + wire[12 : qend + 4] + body[qend + 4 :]
        if truncated:
            self.stats.truncated += 1
        sel = res.selection
        key = packed_key(wire, tcp)
        if key is not None and (sel is None or sel.fixed):
            if len(self._packed) >= MAX_PACKED:
                self._packed.clear()
            service = self.answers.index(view).services.get(sel.service) if sel else None
            qend = question_name_end(wire)
            self._packed[key] = (service, sel, out[2:], res.rcode, qend)
        return out, res.rcode

    def _build(
        self,
        query: dns.message.Message,
        res: Resolution,
        ecs: dns.edns.ECSOption | None,
        qname: dns.name.Name,
        name: str,
        *,
        tcp: bool,
    ) -> tuple[bytes, bool]:
        """The response packed by dnspython, its question (and the answers' owner) being
        ``qname``; and whether it had to be truncated."""
        response = dns.message.make_response(query, our_payload=MAX_UDP_PAYLOAD)
        q = query.question[0]
        if qname != q.name or qname.labels != q.name.labels:
            response.question = [dns.rrset.RRset(qname, q.rdclass, q.rdtype)]
        if ecs is not None:
            scope = min(res.scope, ecs.srclen) if res.scope else 0
            option = dns.edns.ECSOption(ecs.address, ecs.srclen, scope)
            response.use_edns(0, 0, MAX_UDP_PAYLOAD, options=[option])
        self._fill(response, res, qname, name)
        return self._pack(query, response, tcp=tcp)

    def _pack(
        self, query: dns.message.Message, response: dns.message.Message, *, tcp: bool
    ) -> tuple[bytes, bool]:
        limit = TCP_MAX
        if not tcp:
            limit = (
                max(MIN_UDP_PAYLOAD, min(query.payload, MAX_UDP_PAYLOAD))
                if query.edns == 0
                else MIN_UDP_PAYLOAD
            )
        try:
            return response.to_wire(max_size=limit), False
        except dns.exception.TooBig:
            response.answer.clear()
            response.authority.clear()
            response.additional.clear()
            response.flags |= dns.flags.TC
            return response.to_wire(), True

    def _fill(
        self, response: dns.message.Message, res: Resolution, qname: dns.name.Name, name: str
    ) -> None:
        response.set_rcode(_RCODES[res.rcode])
        if res.authoritative:
            response.flags |= dns.flags.AA
        for rec in res.answer:
            response.answer.append(self._cached(rec, qname if rec.name == name else None))
        for rec in res.authority:
            response.authority.append(self._cached(rec))
        for rec in res.additional:
            response.additional.append(self._cached(rec))
