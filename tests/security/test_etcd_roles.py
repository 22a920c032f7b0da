"""etcd roles of least privilege against a real etcd (--client-cert-auth, auth enabled).

``fedgate etcd-bootstrap`` creates the roles; these tests prove that a gateway's
credentials cannot write a service, another cluster's endpoints or another gateway's
record, that discovery writes only its cluster's endpoints, that only the operator
writes config, and that a client without a certificate from etcd's CA gets nothing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation import codec
from federation.cli import main
from federation.devstack.certs import TestCa
from federation.etcd import EtcdAuth, EtcdClient, EtcdError, EtcdTls, EtcdUnavailable, Put
from federation.etcd_roles import bootstrap
from federation.keys import KeyLayout
from federation.leaselock import LeaseLock
from federation.model import Endpoint, GatewayRecord, HealthState, Observation
from tests.federation.test_view import cluster, service
from tests.support.etcd import EtcdCluster
from tests.support.gateway_proc import GatewayProcess
from tests.support.wait import async_wait_for, wait_for

LAYOUT = KeyLayout("/fedgate/")
CLUSTERS = ["a", "b"]


@pytest.fixture(scope="module")
def tls_etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster(tls=True) as etcd:
        yield etcd


@pytest.fixture(scope="module")
def bootstrapped(tls_etcd: EtcdCluster) -> EtcdCluster:
    async def run() -> None:
        async with EtcdClient(tls_etcd.endpoints, tls=tls_etcd.client_tls("root")) as root:
            report = await bootstrap(root, LAYOUT, CLUSTERS)
            assert "+ authentication enabled" in report
            again = await bootstrap(root, LAYOUT, CLUSTERS)
            assert again == []  # idempotent: nothing left to change

    asyncio.run(run())
    return tls_etcd


def client(etcd: EtcdCluster, user: str) -> EtcdClient:
    return EtcdClient(etcd.endpoints, timeout=1.5, tls=etcd.client_tls(user))


async def denied(c: EtcdClient, key: str, value: bytes = b"{}") -> None:
    with pytest.raises(EtcdError, match="permission denied"):
        await c.put(key, value)


async def test_gateway_writes_only_its_own_records(bootstrapped: EtcdCluster) -> None:
    async with client(bootstrapped, "fedgate-operator") as op:
        await op.put(LAYOUT.cluster("a"), codec.encode(cluster("a")))
        await op.put(LAYOUT.service("shop"), codec.encode(service("shop", ("a",))))
    async with client(bootstrapped, "fedgate-gateway-a") as gw:
        # reads the whole prefix, watches it, writes its own records under its lease
        _, kvs = await gw.get_prefix(LAYOUT.prefix)
        assert {kv.key for kv in kvs} >= {LAYOUT.cluster("a"), LAYOUT.service("shop")}
        stream = await gw.watch(LAYOUT.prefix, start_revision=1)
        await stream.aclose()
        lease = await gw.grant_lease(5)
        await gw.put(
            LAYOUT.gateway("a", "gw1"), codec.encode(GatewayRecord("gw1", "a")), lease=lease
        )
        await gw.put(LAYOUT.health_report("a", "gw1"), b"[]", lease=lease)
        eps = [Endpoint("10.0.0.1:80", "a", "shop", source="gw1")]
        await gw.put(LAYOUT.endpoints("shop", "a", "gw1"), codec.encode(eps), lease=lease)
        # ... and nothing else
        await denied(gw, LAYOUT.service("shop"), codec.encode(service("shop", ("a",))))
        await denied(gw, LAYOUT.service("evil"))
        await denied(gw, LAYOUT.cluster("a"))
        await denied(gw, LAYOUT.federation())
        await denied(gw, LAYOUT.generation())  # the apply's generation and barrier (h3)
        await denied(gw, LAYOUT.applying())
        await denied(gw, LAYOUT.gateway("b", "gw9"))
        await denied(gw, LAYOUT.endpoints("shop", "b", "gw1"))
        await denied(gw, "/other-prefix/x")
        with pytest.raises(EtcdError, match="permission denied"):
            await gw.delete(LAYOUT.service("shop"))
        await gw.revoke_lease(lease)


async def test_a_gateway_writes_only_its_own_clusters_health(bootstrapped: EtcdCluster) -> None:
    """health/{cluster}/ is granted per cluster: a gateway of a leads a's health (lock,
    summary, report) and cannot write, or take the lock of, cluster b's."""
    async with client(bootstrapped, "fedgate-gateway-a") as gw:
        lock = LeaseLock(gw, LAYOUT.health_lock("a"), "gw1", ttl=5.0)
        async with lock.hold() as held:
            assert held is not None
            summary = [Observation("gw1", "a", "shop", "a", HealthState.HEALTHY, 1, 1)]
            ok, _ = await gw.txn(
                [held.guard()],
                [Put(LAYOUT.health_summary("a", "shop"), codec.encode(summary), lease=held.lease)],
            )
            assert ok
            await gw.put(LAYOUT.health_report("a", "gw1"), b"[]")
        lie = [Observation("gw1", "b", "shop", "b", HealthState.UNHEALTHY, 0, 1)]
        await denied(gw, LAYOUT.health_summary("b", "shop"), codec.encode(lie))
        await denied(gw, LAYOUT.health_summary("b", "*"))
        await denied(gw, LAYOUT.health_report("b", "gw9"))
        await denied(gw, LAYOUT.health_lock("b"))
        with pytest.raises(EtcdError, match="permission denied"):
            await LeaseLock(gw, LAYOUT.health_lock("b"), "gw1", ttl=5.0).acquire()
        with pytest.raises(EtcdError, match="permission denied"):
            await gw.delete(LAYOUT.health_part("b", "summary"), prefix=True)


async def test_discovery_writes_only_its_clusters_endpoints(bootstrapped: EtcdCluster) -> None:
    async with client(bootstrapped, "fedgate-discovery-b") as disc:
        eps = [Endpoint("10.0.0.2:80", "b", "shop", source="kubernetes")]
        await disc.put(LAYOUT.endpoints("shop", "b", "kubernetes"), codec.encode(eps))
        await denied(disc, LAYOUT.endpoints("shop", "a", "kubernetes"))
        await denied(disc, LAYOUT.gateway("b", "gw1"))
        await denied(disc, LAYOUT.service("shop"))


async def test_only_the_operator_writes_config(bootstrapped: EtcdCluster) -> None:
    async with client(bootstrapped, "fedgate-operator") as op:
        # the name of clusters.example.yaml: a later test applies it on this prefix
        await op.put(LAYOUT.federation(), b'{"name":"acme-prod"}')
        # the apply barrier and the applied generation are the operator's too
        await op.put(LAYOUT.applying(), b"{}")
        await op.delete(LAYOUT.applying())
        await denied(op, LAYOUT.gateway("a", "gw1"))  # runtime facts are not the operator's
    # a user the bootstrap never created has no role at all
    async with client(bootstrapped, "mallory") as nobody:
        with pytest.raises(EtcdError, match="permission denied"):
            await nobody.get(LAYOUT.service("shop"))


async def test_no_certificate_or_a_foreign_ca_is_refused(
    bootstrapped: EtcdCluster, tmp_path: Path
) -> None:
    ca = bootstrapped.client_tls("root").ca
    with pytest.raises(EtcdUnavailable):
        async with EtcdClient(bootstrapped.endpoints, timeout=1.0, tls=EtcdTls(ca=ca)) as c:
            await c.get(LAYOUT.service("shop"))
    foreign = TestCa("foreign CA")
    files = foreign.write(tmp_path, "root", foreign.issue("root"))
    forged = EtcdTls(ca=ca, cert=files.cert, key=files.key)  # CN root, wrong issuer
    with pytest.raises(EtcdUnavailable):
        async with EtcdClient(bootstrapped.endpoints, timeout=1.0, tls=forged) as c:
            await c.get(LAYOUT.service("shop"))


async def test_password_users_token_refresh_and_rotation(tmp_path: Path) -> None:
    """Password mode on a plain etcd: generated 0600 password files, a token that expires
    (--auth-token-ttl 1) is renewed by the client, deleting a file rotates it."""
    pw = tmp_path / "pw"
    pw.mkdir(mode=0o700)
    with EtcdCluster(extra_args=("--auth-token-ttl", "1")) as etcd:
        async with EtcdClient(etcd.endpoints) as anyone:
            await bootstrap(anyone, LAYOUT, ["a"], passwords_dir=pw)
        files = sorted(p.name for p in pw.iterdir())
        assert "root.password" in files and "fedgate-gateway-a.password" in files
        assert all(os.stat(pw / f).st_mode & 0o077 == 0 for f in files)
        secret = (pw / "fedgate-gateway-a.password").read_text().strip()
        auth = EtcdAuth("fedgate-gateway-a", secret)
        async with EtcdClient(etcd.endpoints, auth=auth) as gw:
            await gw.put(LAYOUT.gateway("a", "g"), b"{}")
            await denied(gw, LAYOUT.service("x"))
            await asyncio.sleep(2.5)  # pacing: the simple token expires (TTL 1 s)
            await gw.put(LAYOUT.gateway("a", "g"), b"{}")  # re-authenticated, not refused
            await asyncio.sleep(2.5)  # pacing: the token expires again
            stream = await gw.watch(LAYOUT.prefix, start_revision=1)  # a watch, likewise
            await stream.aclose()
        # without credentials, after auth enable: nothing
        async with EtcdClient(etcd.endpoints, timeout=1.0) as anon:
            with pytest.raises(EtcdError, match=r"user name is empty|permission denied"):
                await anon.get(LAYOUT.service("x"))
        # rotation: delete the file, run again as root
        (pw / "fedgate-gateway-a.password").unlink()
        root = EtcdAuth("root", (pw / "root.password").read_text().strip())
        async with EtcdClient(etcd.endpoints, auth=root) as admin:
            report = await bootstrap(admin, LAYOUT, ["a"], passwords_dir=pw)
        assert report == ["~ user fedgate-gateway-a: new password"]
        async with EtcdClient(etcd.endpoints, timeout=1.0, auth=auth) as old:
            with pytest.raises(EtcdError, match="authentication failed"):
                await old.get(LAYOUT.service("x"))


def test_cli_bootstrap_is_idempotent_and_refuses_bad_input(
    tls_etcd: EtcdCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tls_etcd.client_tls("root")
    argv = [
        "etcd-bootstrap", "--etcd", tls_etcd.endpoint, "--etcd-cacert", str(root.ca),
        "--etcd-cert", str(root.cert), "--etcd-key", str(root.key),
    ]  # fmt: skip
    assert main([*argv, "--cluster", "c"]) == 0
    assert "+ role fedgate-gateway-c" in capsys.readouterr().out
    assert main([*argv, "--cluster", "c"]) == 0
    assert "(0 change(s))" in capsys.readouterr().out
    # a decommissioned cluster's credentials are revoked with --prune
    assert main([*argv, "--cluster", "c", "--cluster", "d"]) == 0
    capsys.readouterr()
    everyone = ["--cluster", "a", "--cluster", "b", "--cluster", "c"]
    assert main([*argv, *everyone, "--cluster", "aws-eu-west-1", "--prune"]) == 0
    out = capsys.readouterr().out
    assert "- role fedgate-gateway-d" in out and "- user fedgate-discovery-d" in out
    assert "fedgate-gateway-c" not in out
    assert main(argv) == 2
    assert "name the clusters" in capsys.readouterr().err
    assert main([*argv[:-2], "--cluster", "c"]) == 2  # a certificate without its key
    assert "needs its key" in capsys.readouterr().err


def test_a_real_gateway_runs_on_its_role_alone_and_the_operator_applies(
    bootstrapped: EtcdCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """https:// endpoints work wherever they are accepted (before: a traceback at start).
    The operator's certificate applies the manifest; a gateway holding only the gateway
    role of its cluster becomes ready and registers itself under its lease."""
    op = bootstrapped.client_tls("fedgate-operator")
    manifest = Path(__file__).resolve().parents[2] / "clusters.example.yaml"
    code = main([
        "apply", str(manifest), "--etcd", bootstrapped.endpoint, "--etcd-cacert", str(op.ca),
        "--etcd-cert", str(op.cert), "--etcd-key", str(op.key),
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    name = "aws-eu-west-1"
    asyncio.run(_bootstrap_cluster(bootstrapped, name))
    gw = bootstrapped.client_tls(f"fedgate-gateway-{name}")
    settings = {
        "cluster": name,
        "id": "gw-tls",
        "insecureEastWest": True,
        "etcd": {
            "endpoints": [bootstrapped.endpoint],
            "tls": {"ca": gw.ca, "cert": gw.cert, "key": gw.key},
        },
    }
    with GatewayProcess(settings=settings) as proc:

        async def registered() -> bool:
            async with client(bootstrapped, "fedgate-operator") as c:
                kv = await c.get(LAYOUT.gateway(name, "gw-tls"))
                return kv is not None and kv.lease != 0

        wait_for(lambda: asyncio.run(registered()), timeout=20, what="gateway record")

        async def summarised() -> bool:  # as its cluster's health leader, under its lease
            async with client(bootstrapped, "fedgate-operator") as c:
                record = await c.get(LAYOUT.gateway(name, "gw-tls"))
                _, kvs = await c.get_prefix(LAYOUT.health_part(name, "summary"))
                return record is not None and any(kv.lease == record.lease for kv in kvs)

        wait_for(lambda: asyncio.run(summarised()), timeout=20, what="summary under its lease")
        assert "permission denied" not in proc.log()


async def _bootstrap_cluster(etcd: EtcdCluster, name: str) -> None:
    async with EtcdClient(etcd.endpoints, tls=etcd.client_tls("root")) as root:
        await bootstrap(root, LAYOUT, [*CLUSTERS, name])


async def test_rotated_certificate_files_are_picked_up(
    bootstrapped: EtcdCluster, tmp_path: Path
) -> None:
    """Client certificates rotate by rewriting their files (Vault agent, cert-manager, the
    gateway's own Vault issue): the client reconnects with the new files, no restart."""
    gw = bootstrapped.client_tls("fedgate-gateway-a")
    mallory = bootstrapped.client_tls("mallory")
    assert gw.cert is not None and gw.key is not None
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copyfile(gw.cert, cert)
    shutil.copyfile(gw.key, key)
    tls = EtcdTls(ca=gw.ca, cert=str(cert), key=str(key))
    async with EtcdClient(
        bootstrapped.endpoints, timeout=1.5, tls=tls, tls_check_interval=0.05
    ) as c:
        await c.put(LAYOUT.gateway("a", "rot"), b"{}")
        assert mallory.cert is not None and mallory.key is not None
        shutil.copyfile(mallory.cert, cert)  # the files now name another user
        shutil.copyfile(mallory.key, key)

        async def reloaded() -> bool:  # the client checks its files every 0.05 s
            try:
                await c.put(LAYOUT.gateway("a", "rot"), b"{}")
            except EtcdError as exc:
                return "permission denied" in str(exc)
            return False

        await async_wait_for(reloaded, timeout=10.0, what="the rewritten files in use")
        await denied(c, LAYOUT.gateway("a", "rot"))  # proves the new files are in use
