"""Three real gateways (``fedgate serve``) order one ACME certificate and all serve it.

OpenBao's ACME server resolves the name (through our resolver) to gateway 0's public
listener on port 80 -- it answers HTTP-01 for whichever gateway holds the order lock,
from the token in its routing view. Measures: orders per name versus gateways, the time
from ``fedgate apply`` to every gateway serving the name by SNI, and failed TLS
handshakes meanwhile (the Vault PKI certificate serves until the swap). Needs root.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
import time
import urllib.request
from pathlib import Path

from cryptography import x509

from federation.etcd import EtcdClient
from federation.keys import KeyLayout
from federation.view import load_view
from tests.acme.support import (
    enable_acme,
    free_loopback_80,
    issued,
    skip_unless_runnable,
    start_dns,
)
from tests.support.etcd import EtcdCluster
from tests.support.gateway_proc import GatewayProcess
from tests.support.ports import free_ports
from tests.support.vault import OpenBao, setup_fedgate
from tests.support.wait import async_wait_for

NAME = "www.fedgate.test"
MANIFEST = """\
apiVersion: fedgate/v1
kind: Federation
metadata: {{name: acme}}
clusters:
  - name: eu
    region: eu-west-1
    cloud: aws
    gateway: {{eastWest: "https://127.0.0.1:15443"}}
services:
  - name: web
    tls: acme
    routes: [{{host: {name}}}]
    port: 8080
    clusters: [eu]
    endpoints: {{eu: ["127.0.0.1:9"]}}
"""


def sni_san(host: str, port: int, sni: str) -> str | None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    with (
        socket.create_connection((host, port), timeout=3) as raw,
        ctx.wrap_socket(raw, server_hostname=sni) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = san.get_values_for_type(x509.DNSName)
    return names[0] if names else None


def metrics(g: GatewayProcess) -> dict[str, float]:
    with urllib.request.urlopen(g.url("admin") + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("fedgate_acme_"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


async def test_three_gateways_one_order_all_serve(etcd: EtcdCluster, tmp_path: Path) -> None:
    hosts = [skip_unless_runnable()]
    for _ in range(10):
        h = free_loopback_80()
        if h is not None and h not in hosts:
            hosts.append(h)
        if len(hosts) == 3:
            break
    assert len(hosts) == 3
    with OpenBao() as bao:
        setup_fedgate(bao)
        directory = enable_acme(bao)
        transport, dns_port = await start_dns("127.0.0.1", {NAME: hosts[0]})
        bao.client().write_data(
            "pki/config/acme", data={"enabled": True, "dns_resolver": f"127.0.0.1:{dns_port}"}
        )
        gws = []
        try:
            for h in hosts:
                tls_port, admin, ew = free_ports(3, h)
                settings = {
                    "cluster": "eu",
                    "etcd": {"endpoints": etcd.endpoints},
                    "vault": {"addr": bao.addr, "auth": {"token": bao.root_token}},
                    "acme": {"directory": directory, "email": "ops@fedgate.test"},
                    "admin": {"publicMetrics": True},
                    "listen": {
                        "public": f"{h}:80",
                        "publicTls": f"{h}:{tls_port}",
                        "admin": f"{h}:{admin}",
                        "eastWest": f"{h}:{ew}",
                    },
                }
                gws.append(GatewayProcess(settings=settings, host=h))
            await asyncio.gather(*(asyncio.to_thread(g.start) for g in gws))
            before = issued(bao)
            manifest = tmp_path / "m.yaml"
            manifest.write_text(MANIFEST.format(name=NAME))
            fedgate = Path(sys.executable).parent / "fedgate"
            t0 = time.monotonic()
            apply = await asyncio.create_subprocess_exec(
                str(fedgate), "apply", str(manifest), "--etcd", ",".join(etcd.endpoints),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            assert await asyncio.wait_for(apply.wait(), 60) == 0
            serving: dict[str, float] = {}
            failures = handshakes = 0
            while len(serving) < len(gws) and time.monotonic() - t0 < 60:
                for g in gws:
                    if g.host in serving:
                        continue
                    handshakes += 1
                    try:
                        san = await asyncio.to_thread(sni_san, *g.address("public_tls"), NAME)
                    except (OSError, ssl.SSLError):
                        failures += 1
                        continue
                    if san == NAME:
                        serving[g.host] = time.monotonic() - t0
                await asyncio.sleep(0.05)  # poll interval; the loop has a 60 s deadline
            orders = issued(bao) - before
            print(
                f"\nACME: gateways={len(gws)} orders={orders} apply->all serving="
                f"{max(serving.values(), default=float('nan')):.2f}s "
                f"handshakes={handshakes} failed={failures}"
            )
            assert len(serving) == len(gws), [g.log()[-1500:] for g in gws]
            assert orders == 1
            assert failures == 0
            # /v1/health/global reads the gateway records: nothing missing, no problem
            async with EtcdClient(etcd.endpoints) as client:

                async def settled() -> bool:
                    view = await load_view(client, KeyLayout())
                    recs = list(view.gateways.values())
                    return len(recs) == 3 and all(
                        not r.acme_missing and r.acme_problem is None for r in recs
                    )

                await async_wait_for(settled, timeout=15, what="gateway records settle")
            # metrics: one order across the three, every gateway knows the expiry
            scraped = [await asyncio.to_thread(metrics, g) for g in gws]
            assert sum(m["fedgate_acme_orders_total"] for m in scraped) == 1
            key = f'fedgate_acme_certificate_expiry_timestamp_seconds{{name="{NAME}"}}'
            assert all(m[key] > time.time() for m in scraped)
        finally:
            for g in gws:
                g.stop()
            transport.close()
