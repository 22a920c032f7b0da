"""Answer selection over hand-built views (in process): strategies, liveness, ramps, the
packed-answer cache. The same Placement as the request path decides; no mocks."""

from __future__ import annotations

import ipaddress
import random
from collections import Counter
from dataclasses import replace
from types import MappingProxyType

import dns.message
import dns.rdatatype

from federation.model import (
    Cluster,
    Endpoint,
    Failover,
    GatewayRecord,
    HealthState,
    NearestRule,
    PublicEntry,
    Route,
    RoutingView,
    Service,
    ServiceDns,
    ServiceHealth,
    Zone,
)
from gateway.dns import DnsAnswers, Responder

NOW = 1_800_000_000.0


def _cluster(name: str, tier: int, entry: PublicEntry) -> Cluster:
    return Cluster(name, name, "other", "prod", tier, f"https://{name}:1", public_entry=entry)


CLUSTERS = {
    "a": _cluster("a", 0, PublicEntry(("192.0.2.1",))),
    "b": _cluster("b", 0, PublicEntry(("192.0.2.2",))),
    "c": _cluster("c", 1, PublicEntry(hostname="lb.c.example.net")),
}


def service(**dns: object) -> Service:
    return Service(
        name="shop",
        routes=(Route("shop.acme.com"), Route("*.shop.acme.com")),
        port=80,
        clusters=("a", "b", "c"),
        failover=Failover(failback_window=0.0),
        dns=ServiceDns(**dns),  # type: ignore[arg-type]
    )


def view(
    svc: Service,
    *,
    live: tuple[str, ...] = ("a", "b", "c"),
    healthy: dict[str, int] | None = None,
    revision: int = 1,
) -> RoutingView:
    counts = healthy or {"a": 2, "b": 2, "c": 2}
    return RoutingView(
        revision=revision,
        config_revision=1,
        clusters=MappingProxyType(CLUSTERS),
        services=MappingProxyType({"shop": svc}),
        endpoints=MappingProxyType(
            {("shop", c): (Endpoint(f"10.0.0.{i}:80", c, "shop"),) for i, c in enumerate("abc")}
        ),
        gateways=MappingProxyType(
            {f"{c}-gw": GatewayRecord(f"{c}-gw", c, dns=f"10.0.{n}.1:53") for n, c in enumerate(live)}  # noqa: E501
        ),
        health=MappingProxyType(
            {
                ("shop", c): ServiceHealth(
                    "shop", c, HealthState.HEALTHY if n else HealthState.UNHEALTHY,
                    0.9 if n else 0.0, healthy_endpoints=n, total_endpoints=2, observers=3,
                )
                for c, n in counts.items()
            }
        ),
        source="etcd",
        zones=(Zone("acme.com"),),
    )  # fmt: skip


def answers() -> DnsAnswers:
    return DnsAnswers(clock=lambda: NOW, rng=random.Random(3))


def test_healthiest_names_the_preferred_tier_and_follows_liveness() -> None:
    svc = service()
    ans = answers()
    sel = ans.select(view(svc), svc)
    assert sorted(sel.clusters) == ["a", "b"] and sorted(sel.ipv4) == ["192.0.2.1", "192.0.2.2"]
    assert ans.select(view(svc, live=("a", "c")), svc).clusters == ("a",)
    # the whole tier 0 without a live gateway: tier 1, a CNAME to its hostname
    sel = ans.select(view(svc, live=("c",)), svc)
    assert sel.clusters == ("c",) and sel.cname == "lb.c.example.net"
    # unhealthy by the federation's majority: out too
    assert ans.select(view(svc, healthy={"a": 0, "b": 2, "c": 2}), svc).clusters == ("b",)


def test_a_cluster_that_came_up_late_takes_its_share_when_it_is_the_last_one() -> None:
    """Regression: a cluster first seen unreachable (its gateway registered after the
    others) stayed at the failback floor for DNS, since nothing confirmed it, so when the
    other tier-0 cluster died the answers went to tier 1 instead of to it."""
    svc = replace(service(), failover=Failover(failback_window=5.0))
    now = [NOW]
    ans = DnsAnswers(clock=lambda: now[0], rng=random.Random(3))
    assert ans.select(view(svc, live=("b", "c")), svc).clusters == ("b",)
    assert sorted(ans.select(view(svc), svc).clusters) == ["a", "b"]
    now[0] += 10.0  # longer than the failback window: a's ramp is over
    late = view(svc, live=("a", "c"), revision=2)
    picks = Counter(ans.select(late, svc).clusters for _ in range(50))
    assert picks == {("a",): 50}


def test_ordered_weighted_and_nearest() -> None:
    ordered = service(strategy="ordered", order=("b", "a"))
    ans = answers()
    assert ans.select(view(ordered), ordered).clusters == ("b",)
    assert ans.select(view(ordered, live=("a", "c")), ordered).clusters == ("a",)

    weighted = service(strategy="weighted")
    ans = answers()
    v = view(weighted, healthy={"a": 2, "b": 1, "c": 2})  # a has twice b's capacity
    picks = Counter(ans.select(v, weighted).clusters[0] for _ in range(600))
    assert set(picks) == {"a", "b"} and 1.5 < picks["a"] / picks["b"] < 2.7

    rule = NearestRule(ipaddress.ip_network("10.1.0.0/16"), ("c", "b"))
    nearest = service(strategy="nearest", nearest=(rule,))
    ans = answers()
    v = view(nearest)
    near = ans.select(v, nearest, ipaddress.ip_address("10.1.2.3"))
    assert near.clusters == ("c",) and near.scope == 16  # c is usable: preferred
    assert sorted(ans.select(v, nearest, ipaddress.ip_address("192.0.2.9")).clusters) == ["a", "b"]
    v = view(nearest, live=("a", "b"))
    assert ans.select(v, nearest, ipaddress.ip_address("10.1.2.3")).clusters == ("b",)


def test_fails_open_when_nothing_is_reachable() -> None:
    svc = service()
    sel = answers().select(view(svc, live=()), svc)
    assert set(sel.clusters) == {"a", "b"} or sel.cname  # every public entry, preferred first
    assert "failing open" in sel.reason or sel.reason.startswith("panic")


def test_packed_answers_keep_the_letter_case_and_follow_the_plan() -> None:
    svc = service()
    ans = answers()
    responder = Responder(ans)
    v = view(svc)
    for name in ("shop.acme.com", "ShOp.AcMe.CoM", "SHOP.ACME.COM"):
        q = dns.message.make_query(name, "A", use_edns=0)
        wire, rcode = responder.respond(v, q.to_wire(), "127.0.0.1", tcp=False)
        assert wire is not None and rcode == "NOERROR"
        r = dns.message.from_wire(wire)
        assert r.id == q.id and r.question[0].name.to_text() == name + "."
        assert wire[12 : 12 + len(name) + 2] == q.to_wire()[12 : 12 + len(name) + 2]
        assert sorted(rd.to_text() for rr in r.answer for rd in rr) == ["192.0.2.1", "192.0.2.2"]
    # the same question after b died: not the packed answer of the old plan
    v2 = replace(
        v, gateways=MappingProxyType({k: g for k, g in v.gateways.items() if g.cluster != "b"})
    )
    q = dns.message.make_query("shop.acme.com", "A", use_edns=0)
    wire, _ = responder.respond(v2, q.to_wire(), "127.0.0.1", tcp=False)
    assert wire is not None
    r = dns.message.from_wire(wire)
    assert [rd.to_text() for rr in r.answer for rd in rr] == ["192.0.2.1"]
    assert r.answer[0].rdtype == dns.rdatatype.A


def test_new_names_of_a_known_shape_answer_like_a_fresh_build() -> None:
    """Names under a wildcard and NXDOMAIN names, of the same and of other lengths and
    letter cases: every response parses, echoes its question and carries its records."""
    svc = service()
    v = view(svc)
    responder = Responder(answers())
    names = ["a1.shop.acme.com", "B2.shop.acme.com", "long-name.shop.ACME.com"]
    names += ["x1.acme.com", "Y2.acme.com", "missing-host.acme.com"]
    for name in names * 2:
        for rdtype in ("A", "AAAA"):
            q = dns.message.make_query(name, rdtype, use_edns=0)
            wire, rcode = responder.respond(v, q.to_wire(), "127.0.0.1", tcp=False)
            assert wire is not None
            r = dns.message.from_wire(wire)
            assert r.id == q.id and r.question[0].name.to_text() == name + "."
            assert r.edns == 0
            if ".shop." in name.lower():
                assert rcode == "NOERROR"
                if rdtype == "A":
                    assert [rr.name for rr in r.answer] == [q.question[0].name]
                    assert sorted(d.to_text() for rr in r.answer for d in rr) == [
                        "192.0.2.1",
                        "192.0.2.2",
                    ]
                else:
                    assert not r.answer and r.authority[0].rdtype == dns.rdatatype.SOA
            else:
                assert rcode == "NXDOMAIN" and not r.answer
                soa = r.authority[0]
                assert (
                    soa.name.to_text() == "acme.com." and soa[0].mname.to_text() == "ns-a.acme.com."
                )
