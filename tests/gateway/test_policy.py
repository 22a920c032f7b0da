"""Access policy: SPIFFE IDs and networks (IPv4, IPv6, IPv4-mapped IPv6)."""

from __future__ import annotations

import ipaddress

import pytest

from federation.model import Access
from gateway.policy import allowed, compile_access

FRONTEND = "spiffe://acme.net/ns/web/sa/frontend"


def access(*allow: str) -> Access:
    ids = frozenset(a for a in allow if a.startswith("spiffe://"))
    nets = tuple(ipaddress.ip_network(a, strict=False) for a in allow if "://" not in a)
    return Access(spiffe_ids=ids, networks=nets)


def test_no_access_is_public() -> None:
    assert allowed(None, client_ip="203.0.113.9", peer_id=None)
    assert allowed(None, client_ip="", peer_id=None)


def test_empty_allow_list_denies_everyone() -> None:
    assert not allowed(Access(), client_ip="127.0.0.1", peer_id=FRONTEND)


@pytest.mark.parametrize(
    ("peer", "ip", "expected"),
    [
        (FRONTEND, "203.0.113.9", True),
        ("spiffe://acme.net/ns/web/sa/other", "203.0.113.9", False),
        ("spiffe://acme.net/ns/web/sa/frontend/", "203.0.113.9", False),  # exact match only
        ("SPIFFE://acme.net/ns/web/sa/frontend", "203.0.113.9", False),
        (None, "203.0.113.9", False),
        (None, "10.1.2.3", True),  # the network admits it without an identity
        ("spiffe://acme.net/ns/web/sa/other", "10.1.2.3", True),
    ],
)
def test_spiffe_ids(peer: str | None, ip: str, expected: bool) -> None:
    a = access(FRONTEND, "10.0.0.0/8")
    assert allowed(a, client_ip=ip, peer_id=peer) is expected


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("10.0.0.0", True),
        ("10.255.255.255", True),
        ("11.0.0.0", False),
        ("9.255.255.255", False),
        ("192.168.1.77", True),
        ("192.168.1.78", False),
        ("172.16.5.4", True),
        ("172.32.0.1", False),
        ("2001:db8::1", True),
        ("2001:db8:ffff::1", True),
        ("2001:db9::1", False),
        ("fd00::42", True),
        ("fd00::43", False),
        ("[2001:db8::1]", True),  # bracketed form
        ("fe80::1%eth0", False),  # zone index stripped, then not in the list
        ("::ffff:10.1.2.3", True),  # IPv4-mapped: matched as 10.1.2.3
        ("::ffff:192.168.1.77", True),
        ("::ffff:11.1.2.3", False),
        ("::10.1.2.3", False),  # IPv4-compatible (deprecated) is not mapped
        ("", False),
        ("not-an-ip", False),
        ("10.1.2", False),
        ("unix:/run/sock", False),
    ],
)
def test_networks(ip: str, expected: bool) -> None:
    a = access("10.0.0.0/8", "192.168.1.77/32", "172.16.0.0/12", "2001:db8::/32", "fd00::42/128")
    assert allowed(a, client_ip=ip, peer_id=None) is expected


def test_mapped_network_in_the_list_matches_plain_ipv4_clients() -> None:
    a = access("::ffff:10.0.0.0/104")  # 10.0.0.0/8 written as a mapped IPv6 network
    assert allowed(a, client_ip="10.9.9.9", peer_id=None)
    assert allowed(a, client_ip="::ffff:10.9.9.9", peer_id=None)
    assert not allowed(a, client_ip="11.9.9.9", peer_id=None)


def test_catch_all_networks() -> None:
    assert allowed(access("0.0.0.0/0"), client_ip="203.0.113.9", peer_id=None)
    assert allowed(access("0.0.0.0/0"), client_ip="::ffff:203.0.113.9", peer_id=None)
    assert not allowed(access("0.0.0.0/0"), client_ip="2001:db8::1", peer_id=None)
    assert allowed(access("::/0"), client_ip="2001:db8::1", peer_id=None)


def test_compiled_form_is_cached_per_access_object() -> None:
    a = access("10.0.0.0/8")
    assert compile_access(a) is compile_access(a)
    b = access("10.0.0.0/8")  # equal, but another view's object
    assert compile_access(b).access is b


def test_many_networks() -> None:
    nets = [f"10.{i}.{j}.0/24" for i in range(20) for j in range(50)]
    a = access(*nets)
    assert allowed(a, client_ip="10.19.49.200", peer_id=None)
    assert not allowed(a, client_ip="10.19.50.1", peer_id=None)
