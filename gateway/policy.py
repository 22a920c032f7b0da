"""Access policy: a service's allow list of SPIFFE IDs and networks.

``access: {allow: [...]}`` in the manifest becomes :class:`federation.model.Access`.
A request is allowed when the verified peer identity (the mTLS client certificate's
SPIFFE URI SAN) is one of ``spiffe_ids`` or the client address lies in one of
``networks``. No ``access`` at all means public.

The networks of an :class:`Access` are compiled once (the view's objects live as long as
the view) into per-prefix-length sets of integers, so a check costs one address parse
and one set lookup per distinct prefix length; the answer per client address is cached
(bounded) since clients come back. IPv4-mapped IPv6 addresses
(``::ffff:10.1.2.3``, as a dual-stack socket reports IPv4 clients) are matched as the
IPv4 address they carry, and IPv4-mapped IPv6 networks as IPv4 networks.
"""

from __future__ import annotations

import ipaddress
import socket

from federation.model import Access

__all__ = ["CompiledAccess", "allowed", "compile_access"]

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_DECISIONS_MAX = 1024  # cached client addresses per Access


class CompiledAccess:
    """The networks of one :class:`Access` as integer sets per prefix length."""

    __slots__ = ("access", "decisions", "spiffe_ids", "v4", "v6")

    def __init__(self, access: Access) -> None:
        self.access = access  # held: keeps the id() key of the cache unique
        self.spiffe_ids = access.spiffe_ids
        # client address -> allowed by the networks (clients come back: parse once)
        self.decisions: dict[str, bool] = {}
        v4: dict[int, set[int]] = {}
        v6: dict[int, set[int]] = {}
        for net in access.networks:
            if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_MAPPED):
                plen = net.prefixlen - 96
                v4.setdefault(plen, set()).add(
                    (int(net.network_address) & 0xFFFFFFFF) >> (32 - plen)
                )
            elif isinstance(net, ipaddress.IPv4Network):
                v4.setdefault(net.prefixlen, set()).add(
                    int(net.network_address) >> (32 - net.prefixlen)
                )
            else:
                v6.setdefault(net.prefixlen, set()).add(
                    int(net.network_address) >> (128 - net.prefixlen)
                )
        # longest prefixes first: the common case is a few /32 or /8 entries
        self.v4: tuple[tuple[int, frozenset[int]], ...] = tuple(
            (32 - plen, frozenset(nets)) for plen, nets in sorted(v4.items(), reverse=True)
        )
        self.v6: tuple[tuple[int, frozenset[int]], ...] = tuple(
            (128 - plen, frozenset(nets)) for plen, nets in sorted(v6.items(), reverse=True)
        )

    def allows(self, *, client_ip: str, peer_id: str | None) -> bool:
        if peer_id is not None and peer_id in self.spiffe_ids:
            return True
        hit = self.decisions.get(client_ip)
        if hit is None:
            hit = self.address_allowed(client_ip)
            if len(self.decisions) >= _DECISIONS_MAX:
                self.decisions.clear()
            self.decisions[client_ip] = hit
        return hit

    def address_allowed(self, client_ip: str) -> bool:
        """Is ``client_ip`` in one of the networks (uncached)?"""
        if not self.v4 and not self.v6:
            return False
        parsed = _parse(client_ip)
        if parsed is None:
            return False
        is_v6, value = parsed
        if is_v6:
            if value >> 32 == 0xFFFF and _match(self.v4, value & 0xFFFFFFFF):  # ::ffff:a.b.c.d
                return True
            return _match(self.v6, value)
        return _match(self.v4, value)


def _match(table: tuple[tuple[int, frozenset[int]], ...], value: int) -> bool:
    for shift, nets in table:  # noqa: SIM110 (a plain loop: no generator per call)
        if value >> shift in nets:
            return True
    return False


def _parse(address: str) -> tuple[bool, int] | None:
    """(is IPv6, address as an int), or None when ``address`` is no IP address."""
    if not address:
        return None
    try:
        if ":" in address:
            if "%" in address:  # zone index: fe80::1%eth0
                address = address.split("%", 1)[0]
            if address[0] == "[" and address[-1] == "]":
                address = address[1:-1]
            return True, int.from_bytes(socket.inet_pton(socket.AF_INET6, address), "big")
        return False, int.from_bytes(socket.inet_pton(socket.AF_INET, address), "big")
    except (OSError, ValueError):
        return None


_CACHE: dict[int, CompiledAccess] = {}
_CACHE_MAX = 256  # compiled Access objects (a view holds one per service with access)


def compile_access(access: Access) -> CompiledAccess:
    """The compiled form of ``access``, cached by the object's identity."""
    compiled = _CACHE.get(id(access))
    if compiled is not None and compiled.access is access:
        return compiled
    compiled = CompiledAccess(access)
    if len(_CACHE) >= _CACHE_MAX:
        del _CACHE[next(iter(_CACHE))]  # the oldest: old views' objects must not pile up
    _CACHE[id(access)] = compiled
    return compiled


def allowed(access: Access | None, *, client_ip: str, peer_id: str | None) -> bool:
    """May this client reach a service with this ``access``? None: public."""
    if access is None:
        return True
    if peer_id is not None and peer_id in access.spiffe_ids:
        return True
    if not access.networks:
        return False
    compiled = _CACHE.get(id(access))
    if compiled is None or compiled.access is not access:
        compiled = compile_access(access)
    hit = compiled.decisions.get(client_ip)
    if hit is not None:
        return hit
    return compiled.allows(client_ip=client_ip, peer_id=None)
