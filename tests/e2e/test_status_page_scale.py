"""The status page at 1,000 clusters in headless Chromium: it leads with the summary and
what needs attention, stays bounded (one page of 50 clusters and services), searches and
filters through the API, and draws the trend plots. Screenshot: tests/artifacts/."""

from __future__ import annotations

import math
import os
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest

from federation.trends import Totals, Trends
from gateway.types import ViewHolder
from tests.e2e.test_status_page import ARGS, ARTIFACTS, CHROMIUM
from tests.federation.admin_server import AdminServer
from tests.federation.test_health_query import big_view
from tests.support.wait import wait_for

TOKEN = "page-token-1000"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason=f"chromium is not installed at {CHROMIUM}"
    ),
]


class Traffic:
    """Counters that grow like a gateway's: 200 +- 80 requests/s, 2 % errors with a burst
    of 5xx and failovers from 4 s to 6 s (the series is sampled every 0.2 s here)."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self) -> Totals:
        t = time.monotonic() - self.started
        period = 6.0
        requests = 200 * t + 80 * period / (2 * math.pi) * (1 - math.cos(2 * math.pi * t / period))
        burst = min(max(t - 4.0, 0.0), 2.0)
        return Totals(requests, 0.02 * requests + 120 * burst, float(int(burst * 3)))


TRAFFIC: list[Traffic] = []


def server_age() -> float:
    return time.monotonic() - TRAFFIC[-1].started


@pytest.fixture
def server() -> Iterator[AdminServer]:
    view = big_view(1000)
    traffic = Traffic()
    TRAFFIC.append(traffic)
    trends = Trends(traffic, interval=0.2, window=18.0)
    stop = threading.Event()

    def sample() -> None:  # a gateway's probes and scrapes do this, every few seconds
        while not stop.wait(0.1):
            trends.maybe_sample()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with AdminServer(ViewHolder(view), TOKEN, trends=trends) as s:
            yield s
    finally:
        stop.set()
        sampler.join(timeout=5)


def test_page_at_1000_clusters(server: AdminServer) -> None:
    from playwright.sync_api import sync_playwright

    request = urllib.request.Request(
        f"{server.url}/v1/health/global?limit=50", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        page_bytes = len(resp.read())
    assert page_bytes < 400_000, page_bytes  # what the page fetches every 1.5 s

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{server.url}/#token={TOKEN}")
            page.wait_for_selector("#clusters [data-cluster]", timeout=20_000)
            assert page.inner_text('[data-tile="clusters"] .value') == "1000"
            assert page.inner_text('[data-tile="unhealthy"] .value') == "2"
            # bounded: one page of clusters, the worst first
            cards = page.locator("#clusters [data-cluster]")
            assert cards.count() == 50
            assert page.locator('#clusters [data-cluster][data-state="unhealthy"]').count() == 2
            # what needs attention leads, with the down clusters named
            attention = page.inner_text("#attention")
            assert "cluster aws-r0003" in attention and "more" in attention
            # at this size the matrix is one compact row per service
            assert page.is_visible("#matrix-note")
            assert page.locator("#matrix tbody tr[data-service]").count() == 50
            assert "clusters 1\u201350 of 1000" in page.inner_text("#paging")
            # trend plots fill in (points every 0.2 s here)
            wait_for(
                lambda: page.locator("#trends [data-trend] polyline").count() == 3,
                timeout=20,
                what="three trend plots",
            )
            wait_for(
                lambda: server_age() > 9.0 and page.locator("#trends .plot.bad").count() >= 1,
                timeout=30,
                what="the error burst and failovers marked on the plots",
            )
            page.screenshot(path=str(ARTIFACTS / "status_page_1000.png"), full_page=False)
            page.locator("#matrix-title").scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "status_page_1000_services.png"))

            # search goes to the API: one cluster
            page.fill("#search", "r0042")
            wait_for(
                lambda: page.locator("#clusters [data-cluster]").count() == 1,
                timeout=10,
                what="search narrows to one cluster",
            )
            assert page.get_attribute("#clusters [data-cluster]", "data-cluster") == "aws-r0042"
            page.fill("#search", "")
            page.select_option("#state-filter", "unhealthy")
            wait_for(
                lambda: page.locator("#clusters [data-cluster]").count() == 2,
                timeout=10,
                what="the state filter keeps the two unhealthy clusters",
            )
            page.select_option("#state-filter", "")
            page.click("#next")
            wait_for(
                lambda: "clusters 51\u2013100 of 1000" in page.inner_text("#paging"),
                timeout=10,
                what="the second page",
            )
            assert errors == []
        finally:
            browser.close()
