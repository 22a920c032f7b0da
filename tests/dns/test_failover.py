"""A region's gateways are SIGKILLed: every surviving gateway stops naming it, and a client
resolving through the federation's DNS (all gateways as name servers) keeps resolving."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import dns.resolver
import pytest

from federation.devstack.localfed import DEMO_HOST
from tests.dns.conftest import DnsFederation, addresses, ask, converged, server, start
from tests.support.wait import wait_for

MOVE_WITHIN = 8.0  # generous under load; bench/dns.py measures the real figure


@pytest.fixture
def fed() -> Iterator[DnsFederation]:
    f = start()
    try:
        converged(f)
        yield f
    finally:
        f.close()


def _resolver(fed: DnsFederation) -> dns.resolver.Resolver:
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [gw.cluster.address for gw in fed.gateways.values()]
    r.nameserver_ports = {gw.cluster.address: gw.dns for gw in fed.gateways.values()}
    r.timeout, r.lifetime = 0.5, 3.0
    r.use_edns(0, 0, 1232)
    return r


def test_killed_regions_leave_every_answer(fed: DnsFederation) -> None:
    resolver = _resolver(fed)
    assert "127.0.0.12" in [a.to_text() for a in resolver.resolve(DEMO_HOST, "A")]

    fed.kill_gateway("b")  # SIGKILL: no goodbye, the lease runs out on its own
    killed = time.monotonic()
    for cluster in ("a", "c"):

        def moved(cluster: str = cluster) -> bool:
            got = addresses(ask(server(fed, cluster), DEMO_HOST, "A", use_edns=0))
            return bool(got) and "127.0.0.12" not in got

        wait_for(moved, timeout=MOVE_WITHIN, interval=0.05, what=f"{cluster} drops b")
    assert time.monotonic() - killed < MOVE_WITHIN
    # the client keeps resolving: the dead name server is skipped
    for _ in range(5):
        assert [a.to_text() for a in resolver.resolve(DEMO_HOST, "A")] == ["127.0.0.11"]
    ns = ask(server(fed, "a"), "demo.local", "NS", use_edns=0)

    def ns_gone() -> bool:
        return "ns-b.demo.local." not in addresses(ask(server(fed, "a"), "demo.local", "NS"))

    wait_for(ns_gone, timeout=10, interval=0.1, what="b's name server leaves the NS set")
    assert ns.answer

    # the whole tier 0 gone: the answers follow the request path to tier 1 (c's CNAME)
    fed.kill_gateway("a")

    def tier1() -> bool:
        return addresses(ask(server(fed, "c"), DEMO_HOST, "A", use_edns=0)) == ["lb.c.example.net."]

    wait_for(tier1, timeout=MOVE_WITHIN, interval=0.05, what="tier 1 answers")
    answer = resolver.resolve(DEMO_HOST, "CNAME")
    assert [a.to_text() for a in answer] == ["lb.c.example.net."]


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"chromium is not at {CHROMIUM}")
def test_status_page_shows_the_dns_answer_follow_a_region(fed: DnsFederation) -> None:
    from playwright.sync_api import sync_playwright

    gw = fed.gateways["a"]
    row = '#dns [data-dns-service="shop"]'
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.goto(f"{gw.admin_url}/#token={fed.admin_token}")
            page.wait_for_selector(f"{row}:has-text('127.0.0.12')", timeout=15_000)
            assert "demo.local" in page.locator("#dns-zones").inner_text()
            fed.kill_gateway("b")
            page.wait_for_selector(f"{row}:not(:has-text('127.0.0.12'))", timeout=15_000)
            assert "127.0.0.11" in page.locator(row).inner_text()
        finally:
            browser.close()
