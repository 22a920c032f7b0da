"""TLS-ALPN-01 and DNS-01 (a wildcard) through three real gateways, against OpenBao.

Three ``fedgate serve`` processes start at once with no ACME account in Vault, each
with a public TLS listener on port 443 of its own loopback address and a DNS listener.
``fedgate apply`` then marks ``alpn.fedgate.test`` and ``*.wild.fedgate.test`` in the
zone ``fedgate.test`` as ``tls: acme``. OpenBao's ACME server resolves through gateway
0's DNS listener (its ``dns_resolver``): ``alpn.fedgate.test`` -> the cluster's public
entry, gateway 1's address, whose port 443 answers TLS-ALPN-01 from the view
(whichever gateway holds the order); ``_acme-challenge.wild.fedgate.test`` -> the TXT
value the holder published in etcd. Meanwhile normal clients of both names (ALPN
h2/http1.1) never get a challenge certificate and no handshake fails. Needs root.
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

from gateway.acme_alpn import ACME_IDENTIFIER
from tests.acme.support import enable_acme, free_loopback_80, issued, skip_unless_runnable
from tests.support.etcd import EtcdCluster
from tests.support.gateway_proc import GatewayProcess
from tests.support.ports import free_ports
from tests.support.vault import OpenBao, setup_fedgate

ALPN, WILD, UNDER_WILD = "alpn.fedgate.test", "*.wild.fedgate.test", "x.wild.fedgate.test"
MANIFEST = """\
apiVersion: fedgate/v1
kind: Federation
metadata: {{name: acme}}
clusters:
  - name: eu
    region: eu-west-1
    cloud: aws
    gateway: {{eastWest: "https://127.0.0.1:15443"}}
    publicEntry: {{addresses: ["{entry}"]}}
services:
  - name: web
    tls: acme
    routes: [{{host: {alpn}}}, {{host: "{wild}"}}]
    port: 8080
    clusters: [eu]
    endpoints: {{eu: ["127.0.0.1:9"]}}
zones: [{{name: fedgate.test}}]
"""


def served(host: str, sni: str) -> x509.Certificate:
    """The certificate a normal client (ALPN h2, http/1.1) gets for ``sni``."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection((host, 443), timeout=3) as raw,
        ctx.wrap_socket(raw, server_hostname=sni) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def verified(host: str, sni: str, ca_pem: str) -> None:
    """A handshake that verifies the chain against ``ca_pem`` and the host name."""
    ctx = ssl.create_default_context(cadata=ca_pem)
    with (
        socket.create_connection((host, 443), timeout=3) as raw,
        ctx.wrap_socket(raw, server_hostname=sni),
    ):
        pass


def dns_names(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return list(san.get_values_for_type(x509.DNSName))


def is_challenge(cert: x509.Certificate) -> bool:
    try:
        cert.extensions.get_extension_for_oid(ACME_IDENTIFIER)
    except x509.ExtensionNotFound:
        return False
    return True


def metrics(g: GatewayProcess) -> dict[str, float]:
    with urllib.request.urlopen(g.url("admin") + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("fedgate_acme_"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


def loopbacks_443(n: int) -> list[str]:
    hosts: list[str] = []
    for _ in range(20):
        h = free_loopback_80(443)
        if h is not None and h not in hosts:
            hosts.append(h)
        if len(hosts) == n:
            return hosts
    raise AssertionError("no free 127.0.x.y:443")


async def test_tls_alpn_and_dns_wildcard_through_three_gateways(
    etcd: EtcdCluster, tmp_path: Path
) -> None:
    skip_unless_runnable()
    hosts = loopbacks_443(3)
    with OpenBao() as bao:
        setup_fedgate(bao)
        directory = enable_acme(bao)
        gws: list[GatewayProcess] = []
        try:
            for h in hosts:
                public, admin, ew, dns = free_ports(4, h)
                settings = {
                    "cluster": "eu",
                    "etcd": {"endpoints": etcd.endpoints},
                    "vault": {"addr": bao.addr, "auth": {"token": bao.root_token}},
                    "acme": {
                        "directory": directory,
                        "email": "ops@fedgate.test",
                        "challenge": "tls-alpn-01",
                    },
                    "admin": {"publicMetrics": True},
                    "listen": {
                        "public": f"{h}:{public}",
                        "publicTls": f"{h}:443",
                        "admin": f"{h}:{admin}",
                        "eastWest": f"{h}:{ew}",
                        "dns": f"{h}:{dns}",
                    },
                }
                gws.append(GatewayProcess(settings=settings, host=h))
            resolver = gws[0].settings["listen"]["dns"]
            bao.client().write_data(
                "pki/config/acme", data={"enabled": True, "dns_resolver": resolver}
            )
            await asyncio.gather(*(asyncio.to_thread(g.start) for g in gws))
            before = issued(bao)
            manifest = tmp_path / "m.yaml"
            manifest.write_text(MANIFEST.format(entry=hosts[1], alpn=ALPN, wild=WILD))
            fedgate = Path(sys.executable).parent / "fedgate"
            t0 = time.monotonic()
            apply = await asyncio.create_subprocess_exec(
                str(fedgate), "apply", str(manifest), "--etcd", ",".join(etcd.endpoints),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _, err = await asyncio.wait_for(apply.communicate(), 60)
            assert apply.returncode == 0, err
            want = {ALPN: ALPN, UNDER_WILD: WILD}
            serving: dict[tuple[str, str], float] = {}
            handshakes = failures = challenge_certs = 0
            while len(serving) < len(gws) * len(want) and time.monotonic() - t0 < 90:
                for g in gws:
                    for sni, san in want.items():
                        if (g.host, sni) in serving:
                            continue
                        handshakes += 1
                        try:
                            cert = await asyncio.to_thread(served, g.host, sni)
                        except (OSError, ssl.SSLError):
                            failures += 1
                            continue
                        challenge_certs += is_challenge(cert)
                        if dns_names(cert) == [san]:
                            serving[(g.host, sni)] = time.monotonic() - t0
                await asyncio.sleep(0.05)  # poll interval; the loop has a 90 s deadline
            orders = issued(bao) - before
            scraped = [await asyncio.to_thread(metrics, g) for g in gws]
            accounts = sum(m.get("fedgate_acme_accounts_total", 0) for m in scraped)
            by_type = {
                t: sum(m.get(f'fedgate_acme_challenges_total{{type="{t}"}}', 0) for m in scraped)
                for t in ("http-01", "tls-alpn-01", "dns-01")
            }
            per_name = {
                sni: max((t for (_, n), t in serving.items() if n == sni), default=float("nan"))
                for sni in want
            }
            print(
                f"\nACME challenges: gateways={len(gws)} names=2 orders={orders} "
                f"accounts={accounts} challenges={by_type} orders by gateway="
                f"{[m.get('fedgate_acme_orders_total', 0) for m in scraped]} (gateway 1 "
                f"answers tls-alpn-01) apply->all serving: {ALPN} {per_name[ALPN]:.2f}s, "
                f"{WILD} {per_name[UNDER_WILD]:.2f}s; handshakes={handshakes} "
                f"failed={failures} challenge certificates to normal clients={challenge_certs}"
            )
            assert len(serving) == len(gws) * len(want), [g.log()[-2500:] for g in gws]
            assert orders == 2
            assert accounts == 1
            assert by_type == {"http-01": 0, "tls-alpn-01": 1, "dns-01": 1}
            assert failures == 0 and challenge_certs == 0
            # trusted: the chain verifies against the CA and the name matches
            ca = bao.client().secrets.pki.read_ca_certificate(mount_point="pki")
            for g in gws:
                for sni in want:
                    await asyncio.to_thread(verified, g.host, sni, ca)
        finally:
            for g in gws:
                g.stop()
