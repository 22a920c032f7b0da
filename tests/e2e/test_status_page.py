"""The status page in real headless Chromium (Debian's chromium, driven by playwright).

It renders every cluster grouped by cloud and environment, and a cluster turning
unhealthy shows on the page within a few seconds (the page polls by itself). The
screenshots are kept under tests/artifacts/.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from federation.devstack.localfed import ClusterSpec, LocalFederation
from federation.model import HealthState
from gateway.types import ViewHolder
from tests.federation.admin_server import AdminServer
from tests.federation.views import CLUSTERS, gateway, sample_view
from tests.support.wait import wait_for

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
TOKEN = "page-token-42"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason=f"chromium is not installed at {CHROMIUM}"
    ),
]

U = HealthState.UNHEALTHY


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def admin() -> Iterator[AdminServer]:
    view = sample_view(
        states={("search", "aws-us-east-1"): HealthState.DEGRADED},
        gateways=(
            gateway("aws-eu-west-1"),
            gateway("aws-eu-west-1", 2, applied_revision=38),
            gateway(  # an ACME certificate overdue for renewal (docs/tls.md)
                "gcp-europe-west4",
                acme_name="www.acme.test",
                acme_not_after=time.time() + 7200,
                acme_renew_at=time.time() - 600,
            ),
            gateway("onprem-fra1", renewal_failing=True, vault_ok=False),
            gateway("aws-us-east-1", cert_not_after=time.time() + 3 * 3600),
        ),
    )
    with AdminServer(ViewHolder(view), TOKEN) as server:
        yield server


def cluster_states(page: Any) -> dict[str, str]:
    states: dict[str, str] = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#clusters [data-cluster]')]
              .map(e => [e.dataset.cluster, e.dataset.state]))"""
    )
    return states


def wait_in_page(page: Any, expression: str, *, timeout: float = 5) -> None:
    """Poll a JavaScript expression from here under a deadline. Not
    ``page.wait_for_function``: when its predicate is false at the first check it polls
    inside the page with ``eval``, which the page's Content-Security-Policy forbids (the
    login test failed so in a CI run whenever the refusal was not yet shown)."""
    wait_for(lambda: page.evaluate(expression) is True, timeout=timeout, what=expression)


def test_page_renders_every_cluster_and_follows_health(browser: Any, admin: AdminServer) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1360, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # the document itself is a 401 (the browser sends no token with a navigation)
    page.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and "401" not in m.text else None,
    )
    page.goto(f"{admin.url}/#token={TOKEN}")
    wait_in_page(
        page,
        f"document.querySelectorAll('#clusters [data-cluster]').length === {len(CLUSTERS)}",
        timeout=10,
    )
    assert "token" not in page.url  # the token left the address bar
    states = cluster_states(page)
    assert set(states) == {c.name for c in CLUSTERS}
    assert states["aws-us-east-1"] == "degraded" and states["gcp-europe-west4"] == "healthy"
    # grouped by cloud, then environment
    groups = page.evaluate(
        """() => [...document.querySelectorAll('#clusters .cloud')].map(c => [c.dataset.cloud,
              [...c.querySelectorAll('.env')].map(e => e.dataset.environment)])"""
    )
    assert groups == [["aws", ["prod", "staging"]], ["gcp", ["prod"]], ["onprem", ["prod"]]]
    # a text label with every colour
    label = page.inner_text('#clusters [data-cluster="aws-us-east-1"] .badge')
    assert "degraded" in label
    # service x cluster matrix
    cell = page.locator('#matrix tr[data-service="search"] td[data-cluster="aws-us-east-1"]')
    assert cell.get_attribute("data-state") == "degraded"
    assert "1/2 endpoints" in cell.inner_text()
    # certificates and convergence
    gateways = page.inner_text("#gateways")
    assert "renewal failing" in gateways and "unreachable" in gateways
    assert "ACME www.acme.test" in gateways
    assert "38 (newest 40)" in gateways
    assert "80%" in page.inner_text('[data-tile="convergence"]')
    page.screenshot(path=str(ARTIFACTS / "status_page.png"), full_page=True)

    # the cluster's backends die: every service there turns unhealthy
    started = time.monotonic()
    admin.holder.swap(
        sample_view(states={("checkout", "gcp-europe-west4"): U, ("search", "gcp-europe-west4"): U})
    )
    page.wait_for_selector(
        '#clusters [data-cluster="gcp-europe-west4"][data-state="unhealthy"]', timeout=5_000
    )
    elapsed = time.monotonic() - started
    assert elapsed < 5
    assert "unhealthy" in page.inner_text('#clusters [data-cluster="gcp-europe-west4"] .badge')
    row = page.locator('#matrix tr[data-service="checkout"]')
    assert row.locator('td[data-cluster="gcp-europe-west4"]').get_attribute("data-state") == (
        "unhealthy"
    )
    page.screenshot(path=str(ARTIFACTS / "status_page_unhealthy.png"), full_page=True)
    assert errors == []


def test_page_asks_for_the_token(browser: Any, admin: AdminServer) -> None:
    page = browser.new_page()
    response = page.goto(admin.url + "/")
    assert response is not None and response.status == 401  # the page is the 401's body
    page.wait_for_selector("#login:not([hidden])", timeout=5_000)
    assert page.is_hidden("#dashboard")
    page.fill("#token-input", "wrong-token")
    page.click("#login-form button")
    wait_in_page(page, "document.getElementById('login-error').textContent.includes('refused')")
    page.fill("#token-input", TOKEN)
    page.click("#login-form button")
    page.wait_for_selector("#dashboard:not([hidden])", timeout=5_000)
    page.wait_for_selector("#clusters [data-cluster]", timeout=5_000)
    # the token lives in this tab's sessionStorage, never in a cookie
    assert page.evaluate("sessionStorage.getItem('fedgate.adminToken')") == TOKEN
    assert page.context.cookies() == []
    page.click("#logout")
    page.wait_for_selector("#login:not([hidden])", timeout=5_000)
    assert page.evaluate("sessionStorage.getItem('fedgate.adminToken')") is None


def test_page_shows_when_the_gateway_is_gone(browser: Any) -> None:
    holder = ViewHolder(sample_view())
    with AdminServer(holder, TOKEN) as server:
        page = browser.new_page()
        page.goto(f"{server.url}/#token={TOKEN}")
        page.wait_for_selector("#clusters [data-cluster]", timeout=10_000)
    # the server stopped: the page says so, and keeps the last picture
    # polled from here: see wait_in_page
    wait_for(
        lambda: "unreachable" in (page.locator("#updated").text_content() or ""),
        timeout=10,
        what="the page says the gateway is unreachable",
    )
    assert page.locator("#clusters [data-cluster]").count() == len(CLUSTERS)


def test_a_real_gateway_whose_backends_die_turns_unhealthy_on_the_page(browser: Any) -> None:
    """A real federation (etcd, gateways, backends): kill one region's backends and the
    page served by a gateway's admin listener shows that cluster unhealthy."""
    topology = (
        ClusterSpec("aws-eu-west-1", "aws", "eu-west-1", 0, "127.0.0.51"),
        ClusterSpec("gcp-europe-west4", "gcp", "europe-west4", 0, "127.0.0.52"),
    )
    with LocalFederation(topology=topology, use_vault=False) as fed:
        gw = fed.gateways["gcp-europe-west4"]
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.goto(f"{gw.admin_url}/#token={fed.admin_token}")
        for name in ("aws-eu-west-1", "gcp-europe-west4"):
            page.wait_for_selector(
                f'#clusters [data-cluster="{name}"][data-state="healthy"]', timeout=15_000
            )
        started = time.monotonic()
        fed.kill_backends("aws-eu-west-1")
        page.wait_for_selector(
            '#clusters [data-cluster="aws-eu-west-1"][data-state="unhealthy"]', timeout=10_000
        )
        elapsed = time.monotonic() - started
        assert elapsed < 10
        assert (
            page.locator('#clusters [data-cluster="gcp-europe-west4"]').get_attribute("data-state")
            == "healthy"
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "status_page_real_gateway.png"), full_page=True)
