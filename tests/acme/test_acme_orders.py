"""ACME for real, offline: OpenBao's own ACME server, HTTP-01 on port 80 of a loopback IP.

The ACME server resolves the test name through a tiny resolver of ours (its
``dns_resolver`` setting) to a 127.0.x.y address where the HTTP-01 answer is served
from the tokens the orderer published in etcd. Needs root (port 80).
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from federation.acme_client import AcmeConfig, AcmeOrderer, AcmeProblem
from federation.acme_lock import ACCOUNT, AcmeLock
from federation.acme_renew import AcmeRenewer
from federation.acme_store import AcmeStore
from federation.etcd import EtcdClient
from federation.keys import KeyLayout
from gateway.acme_sni import AcmeSni
from gateway.tls import CertificateMaterial, load_material, server_context
from tests.acme.support import Responder, enable_acme, issued, skip_unless_runnable, start_dns
from tests.support.etcd import EtcdCluster
from tests.support.vault import OpenBao, setup_fedgate

PREFIX = "/fedgate/"


@dataclass
class Acme:
    bao: OpenBao
    directory: str
    host: str  # the loopback address the names resolve to (port 80 answers HTTP-01)
    names: dict[str, str]
    dns_port: int


@pytest.fixture(scope="module")
def acme_env() -> Iterator[Acme]:
    host = skip_unless_runnable()
    with OpenBao() as bao:
        setup_fedgate(bao)
        directory = enable_acme(bao)
        yield Acme(bao, directory, host, {}, 0)


@pytest.fixture
async def env(acme_env: Acme, etcd: EtcdCluster) -> AsyncIterator[tuple[Acme, EtcdClient]]:
    transport, port = await start_dns("127.0.0.1", acme_env.names)
    acme_env.bao.client().write_data(
        "pki/config/acme", data={"enabled": True, "dns_resolver": f"127.0.0.1:{port}"}
    )
    async with EtcdClient(etcd.endpoints) as client:
        responder = await Responder(client, PREFIX, acme_env.host).start()
        try:
            yield acme_env, client
        finally:
            responder.close()
            transport.close()


def orderer(acme: Acme, etcd: EtcdClient, holder: str, *, lock_ttl: float = 10.0) -> AcmeOrderer:
    return AcmeOrderer(
        AcmeConfig(acme.directory, email="ops@fedgate.test"),
        AcmeStore(acme.bao.client()),
        AcmeLock(etcd, PREFIX, holder, ttl=lock_ttl),
        wait_poll=0.2,
    )


async def served_name(ctx: ssl.SSLContext, sni: str) -> str:
    """Handshake with a live server using ``ctx`` and SNI ``sni``; the leaf's DNS SAN."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    try:
        _, w = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname=sni)
        der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
        w.close()
    finally:
        server.close()
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ",".join(san.get_values_for_type(x509.DNSName))


async def test_one_order_for_three_gateways_starting_at_once(env: tuple[Acme, EtcdClient]) -> None:
    acme, etcd = env
    name = "shop.fedgate.test"
    acme.names[name] = acme.host
    before = issued(acme.bao)
    clients = [EtcdClient(etcd.endpoints) for _ in range(3)]
    for c in clients:
        await c.connect()
    try:
        orderers = [orderer(acme, c, f"gw{i}") for i, c in enumerate(clients)]
        snis = [AcmeSni() for _ in range(3)]
        renewers = [
            AcmeRenewer(o, lambda cert, s=s: s.install(cert.name, cert.fullchain_pem, cert.key_pem))
            for o, s in zip(orderers, snis, strict=True)
        ]
        for s in snis:
            s.want({name})
        await asyncio.wait_for(asyncio.gather(*(r.renew_now(name) for r in renewers)), 60)
        assert sum(o.orders for o in orderers) == 1
        assert issued(acme.bao) - before == 1
        chains = {r.states[name].cert.fullchain_pem for r in renewers}  # type: ignore[union-attr]
        assert len(chains) == 1
        # every gateway serves it by SNI; another name falls back to the Vault PKI cert
        pki = acme.bao.client().secrets.pki.generate_certificate(
            "fedgate-gateway", "localhost", mount_point="pki"
        )["data"]
        for s in snis:
            assert s.missing() == []
            public = server_context()
            load_material(public, CertificateMaterial(pki["certificate"], pki["private_key"], ""))
            s.attach(public)
            assert await served_name(public, name) == name
            assert await served_name(public, "localhost") == "localhost"
        assert await etcd.get(KeyLayout(PREFIX).acme_lock(name)) is None
    finally:
        for c in clients:
            await c.close()


async def test_first_account_registered_once_by_gateways_starting_at_once(
    env: tuple[Acme, EtcdClient],
) -> None:
    """No account in Vault and five gateways asking at once: one registers it under the
    account lock, the others read it from Vault (each used to register its own)."""
    acme, etcd = env
    store = AcmeStore(acme.bao.client(), base="acme-race")
    clients = [EtcdClient(etcd.endpoints) for _ in range(5)]
    for c in clients:
        await c.connect()
    try:
        orderers = [orderer(acme, c, f"gw{i}") for i, c in enumerate(clients)]
        for o in orderers:
            o.store = store
        urls = await asyncio.wait_for(asyncio.gather(*(o.account() for o in orderers)), 60)
        assert sum(o.accounts for o in orderers) == 1
        stored = store.read_account()
        assert stored is not None and set(urls) == {stored.url}
        assert await etcd.get(KeyLayout(PREFIX).acme_lock(ACCOUNT)) is None  # released
    finally:
        for c in clients:
            await c.close()


HOLDER = """
import asyncio, sys
from federation.etcd import EtcdClient
from federation.acme_lock import ACCOUNT, AcmeLock
async def main():
    async with EtcdClient(sys.argv[1].split(",")) as c:
        async with AcmeLock(c, "/fedgate/", "doomed", ttl=2).hold(sys.argv[2]) as held:
            assert held is not None
            await held.publish("dead-token", "x")
            print("held", flush=True)
            await asyncio.Event().wait()  # held until the test SIGKILLs this process
asyncio.run(main())
"""


async def test_holder_killed_mid_order_leaves_no_duplicate_and_no_stuck_lock(
    env: tuple[Acme, EtcdClient],
) -> None:
    acme, etcd = env
    name = "killed.fedgate.test"
    acme.names[name] = acme.host
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        ",".join(etcd.endpoints),
        name,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.strip() == b"held"
        proc.send_signal(signal.SIGKILL)  # dies mid-order, holding the lock
        await asyncio.wait_for(proc.wait(), 10)
        layout = KeyLayout(PREFIX)
        assert await etcd.get(layout.acme_lock(name)) is not None
        before = issued(acme.bao)
        o = orderer(acme, etcd, "survivor")
        cert = await asyncio.wait_for(o.obtain(name, timeout=60), 60)
        assert cert.name == name and o.orders == 1
        assert issued(acme.bao) - before == 1
        assert await etcd.get(layout.acme_lock(name)) is None
        assert await etcd.get(layout.acme_challenge("dead-token")) is None
        # a next gateway finds it in Vault: no second order
        o2 = orderer(acme, etcd, "late")
        assert (await o2.obtain(name)).fullchain_pem == cert.fullchain_pem and o2.orders == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_acme_down_keeps_current_certificate_and_says_why(
    env: tuple[Acme, EtcdClient],
) -> None:
    acme, etcd = env
    name = "down.fedgate.test"
    acme.names[name] = acme.host
    sni = AcmeSni()
    sni.want({name})
    r = AcmeRenewer(
        orderer(acme, etcd, "gw"),
        lambda cert: sni.install(cert.name, cert.fullchain_pem, cert.key_pem),
        obtain_timeout=3.0,
    )
    await r.renew_now(name)
    first = r.states[name].cert
    assert first is not None
    acme.bao.client().write_data("pki/config/acme", data={"enabled": False})
    try:
        await r.renew_now(name)  # forced renewal while the ACME server refuses
        st = r.status()[name]
        assert isinstance(st, dict)
        assert st["serving"] is True and st["failures"] == 1
        assert st["problem"], st
        assert r.states[name].cert is first  # still serving the current one
        assert sni.context_for(name) is not None
    finally:
        acme.bao.client().write_data("pki/config/acme", data={"enabled": True})
    # back: renewed and rotated in place while clients keep a keep-alive connection busy
    # and open new handshakes; none of them fails, new handshakes get the new certificate
    public = server_context()
    pki = acme.bao.client().secrets.pki.generate_certificate(
        "fedgate-gateway", "localhost", mount_point="pki"
    )["data"]
    load_material(public, CertificateMaterial(pki["certificate"], pki["private_key"], ""))
    sni.attach(public)
    server = await asyncio.start_server(_keepalive_ok, "127.0.0.1", 0, ssl=public)
    port = server.sockets[0].getsockname()[1]
    try:
        counts = {"requests": 0, "handshakes": 0, "failed": 0}
        renewal = asyncio.create_task(r.renew_now(name))
        await _hammer(port, name, counts, until=renewal)
        await renewal
        print(f"\nACME rotation: {counts}")
        assert counts["failed"] == 0 and counts["requests"] > 0 and counts["handshakes"] > 0
        assert r.states[name].cert is not first and r.states[name].renewals == 1
        new_cert = r.states[name].cert
        assert new_cert is not None
        assert await served_serial(port, name) == _serial(new_cert.fullchain_pem)
    finally:
        server.close()
    assert r.status()[name]["problem"] is None  # type: ignore[index]


async def _keepalive_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
        pass
    finally:
        writer.close()


def _client() -> ssl.SSLContext:
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    return client


async def _hammer(
    port: int, sni: str, counts: dict[str, int], *, until: asyncio.Task[None]
) -> None:
    """Keep-alive requests on one connection plus a new handshake per round, bounded."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=_client(), server_hostname=sni
    )
    deadline = asyncio.get_running_loop().time() + 30
    try:
        while not until.done() and asyncio.get_running_loop().time() < deadline:
            try:
                writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                await writer.drain()
                assert (await reader.readexactly(40)).endswith(b"ok")
                counts["requests"] += 1
                await served_serial(port, sni)
                counts["handshakes"] += 1
            except (OSError, ssl.SSLError, AssertionError, asyncio.IncompleteReadError):
                counts["failed"] += 1
    finally:
        writer.close()


def _serial(pem: str) -> int:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem.encode()).serial_number


async def served_serial(port: int, sni: str) -> int:
    from cryptography import x509

    _, w = await asyncio.open_connection("127.0.0.1", port, ssl=_client(), server_hostname=sni)
    der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
    w.close()
    return x509.load_der_x509_certificate(der).serial_number


async def test_external_account_binding(env: tuple[Acme, EtcdClient]) -> None:
    """A CA that requires EAB: the account is created with the kid and HMAC key."""
    acme, etcd = env
    name = "eab.fedgate.test"
    acme.names[name] = acme.host
    c = acme.bao.client()
    c.write_data("pki/config/acme", data={"enabled": True, "eab_policy": "always-required"})
    try:
        eab = c.write_data("pki/acme/new-eab", data={})["data"]
        store = AcmeStore(c, base="acme-eab")  # a fresh account
        refused = AcmeOrderer(
            AcmeConfig(acme.directory), store, AcmeLock(etcd, PREFIX, "gw"), wait_poll=0.2
        )
        with pytest.raises(AcmeProblem, match=r"(?i)external"):
            await refused.obtain(name, timeout=2)
        o = AcmeOrderer(
            AcmeConfig(acme.directory, eab_kid=eab["id"], eab_hmac_key=eab["key"]),
            store,
            AcmeLock(etcd, PREFIX, "gw"),
            wait_poll=0.2,
        )
        assert (await o.obtain(name, timeout=30)).name == name and o.orders == 1
        assert store.read_account() is not None
    finally:
        c.write_data("pki/config/acme", data={"enabled": True, "eab_policy": "not-required"})
