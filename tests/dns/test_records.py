"""Every record type and error case, asked of real gateway processes with dnspython and dig."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from federation.devstack.localfed import DEMO_HOST, DEMO_ZONE
from tests.dns.conftest import B_EXTRA, NEAR, V6, DnsFederation, addresses, ask, rcode, server
from tests.support.wait import DeadlineExceeded, wait_for

TIER0 = sorted(["127.0.0.11", "127.0.0.12", *B_EXTRA])


def test_a_names_every_cluster_of_the_preferred_tier(fed: DnsFederation) -> None:
    msg = ask(server(fed, "a"), DEMO_HOST, "A", use_edns=0)
    assert rcode(msg) == "NOERROR"
    assert msg.flags & dns.flags.AA
    assert addresses(msg) == TIER0  # a and b (tier 0), not c (tier 1)
    assert msg.answer[0].ttl == 1  # the service's dns.ttl


def test_aaaa_and_nodata(fed: DnsFederation) -> None:
    where = server(fed, "b")
    assert addresses(ask(where, DEMO_HOST, "AAAA", use_edns=0)) == [V6]
    # a type the name has no record of: NOERROR, empty answer, the SOA for negative caching
    msg = ask(where, DEMO_HOST, "MX", use_edns=0)
    assert rcode(msg) == "NOERROR" and not msg.answer
    assert msg.authority[0].rdtype == dns.rdatatype.SOA
    assert msg.authority[0].ttl == 1  # min(SOA ttl, negativeTtl)


def test_cname_for_a_hostname_entry_and_wildcard_hosts(fed: DnsFederation) -> None:
    msg = ask(server(fed, "a"), f"x.y.legacy.{DEMO_ZONE}", "A", use_edns=0)
    assert rcode(msg) == "NOERROR"
    assert [r.rdtype for r in msg.answer] == [dns.rdatatype.CNAME]
    assert addresses(msg) == ["lb.c.example.net."]
    # the wildcard needs a label in front: the suffix itself is an empty non-terminal
    msg = ask(server(fed, "a"), f"legacy.{DEMO_ZONE}", "A", use_edns=0)
    assert rcode(msg) == "NOERROR" and not msg.answer


def test_soa_ns_and_glue(fed: DnsFederation) -> None:
    every = [f"ns-{c}.{DEMO_ZONE}." for c in ("a", "b", "c")]
    # the NS set is the clusters whose gateway records c holds: wait until it has them all
    # (a record re-put after a lease re-grant on a starved machine leaves a moment
    # without it: in one clean-clone run under a CPU hog, c answered with itself alone)
    seen: list[list[str]] = []

    def complete() -> bool:
        seen.append(addresses(ask(server(fed, "c"), DEMO_ZONE, "NS", use_edns=0)))
        return seen[-1] == every

    try:
        wait_for(complete, timeout=15, interval=0.1, what="c's NS set complete")
    except DeadlineExceeded as exc:
        raise AssertionError(f"{exc}; last NS answer: {seen[-1:]}") from None
    msg = ask(server(fed, "c"), DEMO_ZONE, "SOA", use_edns=0)
    soa = msg.answer[0][0]
    assert soa.mname.to_text() == f"ns-a.{DEMO_ZONE}."
    assert soa.rname.to_text() == f"hostmaster.{DEMO_ZONE}."
    assert soa.minimum == 1
    msg = ask(server(fed, "c"), DEMO_ZONE, "NS", use_edns=0)
    assert addresses(msg) == every
    glue = {rrset.name.to_text(): [rd.to_text() for rd in rrset] for rrset in msg.additional}
    assert glue == {f"ns-{c}.{DEMO_ZONE}.": [f"127.0.0.1{i}"] for i, c in enumerate("abc", 1)}
    assert addresses(ask(server(fed, "a"), f"ns-b.{DEMO_ZONE}", "A")) == ["127.0.0.12"]


def test_nxdomain_and_refused(fed: DnsFederation) -> None:
    msg = ask(server(fed, "a"), f"nope.{DEMO_ZONE}", "A", use_edns=0)
    assert rcode(msg) == "NXDOMAIN" and msg.flags & dns.flags.AA
    assert msg.authority[0].rdtype == dns.rdatatype.SOA
    msg = ask(server(fed, "a"), "example.com", "A", use_edns=0)
    assert rcode(msg) == "REFUSED" and not msg.flags & dns.flags.AA
    assert rcode(ask(server(fed, "a"), "demo.localx", "A")) == "REFUSED"
    chaos = dns.message.make_query("version.bind", "TXT", rdclass="CH")
    host, port = server(fed, "a")
    assert rcode(dns.query.udp(chaos, host, port=port, timeout=3)) == "REFUSED"
    notify = dns.message.make_query(DEMO_ZONE, "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    assert rcode(dns.query.udp(notify, host, port=port, timeout=3)) == "NOTIMP"


def test_truncation_and_tcp_fallback(fed: DnsFederation) -> None:
    where = server(fed, "a")
    msg = ask(where, DEMO_HOST, "A")  # no EDNS: 512 bytes at most over UDP
    assert msg.flags & dns.flags.TC and not msg.answer
    full = ask(where, DEMO_HOST, "A", tcp=True)
    assert not full.flags & dns.flags.TC and addresses(full) == TIER0
    small = ask(where, DEMO_HOST, "A", use_edns=0, payload=600)
    assert small.flags & dns.flags.TC
    # the resolver library does the fallback by itself
    resp, used_tcp = dns.query.udp_with_fallback(
        dns.message.make_query(DEMO_HOST, "A"), where[0], port=where[1], timeout=3
    )
    assert used_tcp and addresses(resp) == TIER0


def test_edns_payload_version_and_client_subnet(fed: DnsFederation) -> None:
    where = server(fed, "b")
    msg = ask(where, DEMO_HOST, "A", use_edns=0, payload=4096)
    assert msg.edns == 0 and msg.payload == 1232 and not msg.flags & dns.flags.TC
    bad = ask(where, DEMO_HOST, "A", use_edns=1)
    assert bad.rcode() == dns.rcode.BADVERS
    # nearest: a client in 10.1.0.0/16 (sent as EDNS Client Subnet) gets b only
    ecs = dns.edns.ECSOption("10.1.2.0", 24)
    msg = ask(where, f"geo.{DEMO_ZONE}", "A", use_edns=0, options=[ecs])
    assert addresses(msg) == sorted(["127.0.0.12", *B_EXTRA])
    echoed = [o for o in msg.options if isinstance(o, dns.edns.ECSOption)]
    assert echoed and echoed[0].srclen == 24 and echoed[0].scopelen == 16
    assert msg.answer[0].ttl == 3
    # another network: no rule matches, healthiest; the scope says it applies to all
    other = dns.edns.ECSOption("192.0.2.0", 24)
    msg = ask(where, f"geo.{DEMO_ZONE}", "A", use_edns=0, options=[other])
    assert addresses(msg) == TIER0
    assert [o.scopelen for o in msg.options if isinstance(o, dns.edns.ECSOption)] == [0]


def test_every_gateway_gives_the_same_answers(fed: DnsFederation) -> None:
    questions = [
        (DEMO_HOST, "A"),
        (DEMO_HOST, "AAAA"),
        (f"geo.{DEMO_ZONE}", "A"),
        (f"z.legacy.{DEMO_ZONE}", "AAAA"),
        (DEMO_ZONE, "NS"),
        (DEMO_ZONE, "SOA"),
        (f"nope.{DEMO_ZONE}", "A"),
    ]

    def answers(cluster: str) -> list[tuple[str, list[str]]]:
        out = []
        for name, rdtype in questions:
            msg = ask(server(fed, cluster), name, rdtype, tcp=True)
            out.append((rcode(msg), addresses(msg)))
        return out

    first = answers("a")
    assert answers("b") == first
    assert answers("c") == first


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig (dnsutils) is not installed")
def test_dig_sees_the_same(fed: DnsFederation) -> None:
    host, port = server(fed, "c")

    def dig(*args: str) -> str:
        out = subprocess.run(
            ["dig", f"@{host}", "-p", str(port), "+norecurse", "+time=3", "+tries=1", *args],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return out.stdout

    out = dig(DEMO_HOST, "A")  # dig sends EDNS: the answer fits
    assert "status: NOERROR" in out and "flags: qr aa" in out
    assert "127.0.0.11" in out and "127.0.0.12" in out
    assert "status: NXDOMAIN" in dig(f"nope.{DEMO_ZONE}")
    assert "status: REFUSED" in dig("example.org")
    # without EDNS the answer is truncated and dig retries over TCP by itself
    out = dig("+noedns", DEMO_HOST, "A")
    assert "Truncated, retrying in TCP mode" in out and "198.51.100.39" in out
    assert "lb.c.example.net." in dig("+short", f"www.legacy.{DEMO_ZONE}", "CNAME")
    assert "ns-c.demo.local." in dig("+short", DEMO_ZONE, "NS")
    short = dig("+short", "+subnet=10.1.9.0/24", f"geo.{DEMO_ZONE}", "A").split()
    assert "127.0.0.11" not in short and "127.0.0.12" in short


def test_global_health_and_explain(fed: DnsFederation) -> None:
    health = fed.admin_get("a", "/v1/health/global")["dns"]
    assert health["enabled"] is True
    assert [z["zone"] for z in health["zones"]] == [DEMO_ZONE]
    shop = next(s for s in health["services"] if s["service"] == "shop")
    assert shop["clusters"] == ["b", "a"] or shop["clusters"] == ["a", "b"]
    assert shop["hosts"] == [DEMO_HOST] and shop["strategy"] == "healthiest"
    assert health["stats"]["queries"] > 0
    gw = fed.gateways["a"]
    cli = [sys.executable, "-m", "federation.cli", "explain"]
    args = ["--admin", gw.admin_url, "--token", fed.admin_token]
    out = subprocess.run(
        [*cli, "--dns", f"geo.{DEMO_ZONE}", "--client", "10.1.7.7", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["selection"]["clusters"] == ["b"] and body["A"]["rcode"] == "NOERROR"
    assert NEAR in body["selection"]["reason"]
    assert {c["cluster"] for c in body["candidates"]} == {"a", "b"}
    text = subprocess.run(
        [*cli, "--dns", DEMO_HOST, *args], capture_output=True, text=True, timeout=30
    )
    assert text.returncode == 0 and "127.0.0.11" in text.stdout and "healthiest" in text.stdout
    bad = subprocess.run(
        [*cli, "--dns", DEMO_HOST, "--client", "nonsense", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "nonsense" in bad.stderr and "Traceback" not in bad.stderr


def test_tcp_takes_several_queries_per_connection(fed: DnsFederation) -> None:
    host, port = server(fed, "b")
    queries = [dns.message.make_query(n, "A") for n in (DEMO_HOST, f"nope.{DEMO_ZONE}", "x.org")]
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(
            b"".join(len(w).to_bytes(2, "big") + w for w in (q.to_wire() for q in queries))
        )
        got = []
        stream = conn.makefile("rb")
        for _ in queries:
            size = int.from_bytes(stream.read(2), "big")
            got.append(dns.message.from_wire(stream.read(size)))
    assert [m.id for m in got] == [q.id for q in queries]
    assert [rcode(m) for m in got] == ["NOERROR", "NXDOMAIN", "REFUSED"]
