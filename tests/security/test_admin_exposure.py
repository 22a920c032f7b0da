"""The admin API's exposure: TLS on the admin listener, and what Terraform deploys.

Before: plain HTTP only; Terraform bound admin to 0.0.0.0:9901 with no NetworkPolicy,
mounted the token world-readable (Secret default 0644) and shared one token.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from federation.api import create_admin_app
from federation.devstack.certs import TestCa
from federation.model import RoutingView
from gateway.balancer import Balancer
from gateway.passive import PassiveStats
from gateway.placement import Placement
from gateway.ratelimit import RateLimiter
from gateway.resilience import CircuitBreakers, RetryBudget
from gateway.server import Gateway
from gateway.telemetry import Telemetry
from gateway.tls import CertificateMaterial, TlsContexts, build_contexts, install
from gateway.types import ViewHolder
from tests.gateway.harness import settings_for
from tests.terraform.tf import TERRAFORM_DIR, block, hcl, resources

TOKEN = "admin-token-long-enough-1234"
MODULE = TERRAFORM_DIR / "modules" / "fedgate-cluster"
EXAMPLE = TERRAFORM_DIR / "examples" / "multi-cluster"


def gateway(tls: TlsContexts | None) -> Gateway:
    s = settings_for("c1", admin={"tls": True})
    holder = ViewHolder(RoutingView())
    app = create_admin_app(
        holder=holder, token=TOKEN, gateway_id="g", cluster="c1", telemetry=None,
        explain=lambda *a: {}, ready=lambda: True, status=dict,
    )  # fmt: skip
    return Gateway(
        settings=s, holder=holder, placement=Placement("c1"), balancer=Balancer(),
        breakers=CircuitBreakers(), budget=RetryBudget(), limiter=RateLimiter(),
        telemetry=Telemetry.disabled(gateway_id="g", cluster="c1"), passive=PassiveStats(),
        tls=tls, admin_app=app,
    )  # fmt: skip


async def test_admin_over_tls_with_the_public_certificate() -> None:
    ca = TestCa()
    i = ca.issue("gw", ips=("127.0.0.1",))
    contexts = build_contexts(public=True, east_west=False)
    install(contexts, public=CertificateMaterial(i.cert_pem, i.key_pem, i.ca_pem), east_west=None)
    gw = gateway(contexts)
    await gw.start()
    try:
        host, port = gw.bound["admin"]
        async with httpx.AsyncClient(verify=ssl.create_default_context(cadata=ca.pem)) as c:
            r = await c.get(f"https://{host}:{port}/healthz")
            assert r.status_code == 200
        async with httpx.AsyncClient() as c:
            with pytest.raises(httpx.HTTPError):  # no plain HTTP on the admin port any more
                await c.get(f"http://{host}:{port}/healthz")
    finally:
        await gw.drain(1.0)


async def test_admin_tls_without_a_certificate_does_not_start() -> None:
    with pytest.raises(OSError, match=r"admin\.tls needs the public certificate"):
        await gateway(None).start()


@pytest.fixture(scope="module")
def module() -> dict[str, dict[str, Any]]:
    pytest.importorskip("hcl2", reason="python-hcl2 is not installed (pip install python-hcl2)")
    out: dict[str, dict[str, Any]] = {}
    for f in sorted(MODULE.glob("*.tf")):
        out.update(resources(hcl(f)))
    return out


def test_terraform_binds_admin_to_the_pod_ip_and_mounts_the_token_0440(
    module: dict[str, dict[str, Any]],
) -> None:
    pod = block(module["kubernetes_deployment_v1.gateway"], "spec", "template", "spec")
    (container,) = pod["container"]
    env = {e["name"]: e for e in container["env"]}
    assert block(env["POD_IP"], "value_from", "field_ref")["field_path"] == "status.podIP"
    assert env["FEDGATE_LISTEN_ADMIN"]["value"].startswith("$(POD_IP):")
    volumes = {v["name"]: v for v in pod["volume"]}
    assert block(volumes["admin-token"], "secret")["default_mode"] == "0440"
    # a gateway waiting for Vault at start is not killed by the liveness probe meanwhile
    startup = block(container, "startup_probe")
    assert startup["failure_threshold"] * startup["period_seconds"] >= 3600


def test_terraform_network_policy_opens_admin_only_to_scraper_and_operators(
    module: dict[str, dict[str, Any]],
) -> None:
    spec = block(module["kubernetes_network_policy_v1.gateway"], "spec")
    assert spec["policy_types"] == ["Ingress"]
    text = (MODULE / "network_policy.tf").read_text()
    assert "var.admin_allowed_cidrs" in text and "var.metrics_scraper" in text
    # the admin rule exists only when someone is named (no rule: closed)
    assert "for_each = local.admin_allowed ? [1] : []" in text


def test_terraform_tokens_per_cluster(module: dict[str, dict[str, Any]]) -> None:
    secret = module["kubernetes_secret_v1.admin_token"]
    assert secret["count"] == "${var.admin_token_secret == null ? 1 : 0}"
    main = (EXAMPLE / "main.tf").read_text()
    assert main.count("lookup(var.admin_tokens,") == 3
    assert Path(EXAMPLE / "variables.tf").read_text().count('variable "admin_tokens"') == 1


def test_terraform_etcd_client_pki_role_issues_only_the_clusters_etcd_user(
    module: dict[str, dict[str, Any]],
) -> None:
    role = module["vault_pki_secret_backend_role.etcd_client"]
    assert role["allowed_domains"] == ["${local.etcd_user}"]
    locals_ = {k: v for item in hcl(MODULE / "pod_settings.tf")["locals"] for k, v in item.items()}
    assert locals_["etcd_user"] == "fedgate-gateway-${var.cluster.name}"
    assert role["client_flag"] is True and role["server_flag"] is False
    assert role["allow_subdomains"] is False and role["allow_ip_sans"] is False
