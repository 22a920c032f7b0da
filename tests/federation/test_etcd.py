"""EtcdClient against a real etcd: key-value, transactions, leases, the raw watch, failover."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import yaml

from federation.etcd import (
    Delete,
    EtcdClient,
    EtcdCompacted,
    EtcdUnavailable,
    Guard,
    Put,
    parse_endpoints,
)
from tests.support.etcd import EtcdCluster
from tests.support.ports import free_port


def test_parse_endpoints() -> None:
    assert parse_endpoints("http://a:1, b:2,,") == ["http://a:1", "http://b:2"]
    assert parse_endpoints(["c:3"]) == ["http://c:3"]
    with pytest.raises(ValueError):
        EtcdClient([])


async def test_key_value_round_trip(etcd: EtcdCluster) -> None:
    async with EtcdClient(etcd.endpoints) as client:
        rev = await client.put("/t/a", b"1")
        kv = await client.get("/t/a")
        assert kv is not None and kv.value == b"1" and kv.mod_revision == rev
        await client.put("/t/b", b"2")
        await client.put("/tx", b"outside")
        revision, kvs = await client.get_prefix("/t/")
        assert [k.key for k in kvs] == ["/t/a", "/t/b"]
        assert revision >= rev + 1
        await client.delete("/t/a")
        assert await client.get("/t/a") is None
        await client.delete("/t/", prefix=True)
        assert (await client.get_prefix("/t/"))[1] == []
        assert await client.get("/tx") is not None


async def test_transaction_guards(etcd: EtcdCluster) -> None:
    async with EtcdClient(etcd.endpoints) as client:
        rev = await client.put("/t/a", b"1")
        ok, rev2 = await client.txn(
            [Guard("/t/a", "mod", "==", rev), Guard("/t/b", "create", "==", 0)],
            [Put("/t/a", b"2"), Put("/t/b", b"2")],
        )
        assert ok and rev2 == rev + 1
        # a stale guard: nothing is written
        ok, rev3 = await client.txn([Guard("/t/a", "mod", "==", rev)], [Delete("/t/a")])
        assert not ok and rev3 == rev2
        assert (await client.get("/t/a")) is not None
        # a prefix guard: no key under /t/ changed after rev2
        ok, _ = await client.txn([Guard("/t/", "mod", "<", rev2 + 1, prefix=True)], [])
        assert ok
        await client.put("/t/new", b"x")
        ok, _ = await client.txn([Guard("/t/", "mod", "<", rev2 + 1, prefix=True)], [])
        assert not ok


async def test_first_endpoint_dead_fails_over(etcd: EtcdCluster) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with EtcdClient([dead, *etcd.endpoints], timeout=2.0) as client:
        await client.put("/t/a", b"1")
        assert client.endpoint == etcd.endpoint


async def test_unreachable_is_one_line_and_bounded() -> None:
    endpoints = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    client = EtcdClient(endpoints, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(EtcdUnavailable) as info:
        await client.get("/t/a")
    assert time.monotonic() - started < 5
    assert "\n" not in str(info.value)
    assert endpoints[0] in str(info.value)
    await client.close()


async def test_watch_delivers_whole_transactions(etcd: EtcdCluster) -> None:
    async with EtcdClient(etcd.endpoints) as client:
        rev = await client.put("/t/start", b"")
        stream = await client.watch("/t/", start_revision=rev + 1)
        try:
            ops = [Put(f"/t/k{i}", str(i).encode()) for i in range(50)]
            ok, txn_rev = await client.txn([], ops)
            assert ok
            batch = await asyncio.wait_for(stream.next(), 5)
            assert len(batch.events) == 50
            assert {e.kv.mod_revision for e in batch.events} == {txn_rev}
            await client.delete("/t/k0")
            batch = await asyncio.wait_for(stream.next(), 5)
            assert [(e.kind, e.kv.key) for e in batch.events] == [("delete", "/t/k0")]
            # a progress request is answered on the same stream
            await stream.request_progress()
            batch = await asyncio.wait_for(stream.next(), 5)
            assert batch.progress
        finally:
            await stream.aclose()


async def test_watch_from_compacted_revision(etcd: EtcdCluster) -> None:
    async with EtcdClient(etcd.endpoints) as client:
        first = await client.put("/t/a", b"1")
        for i in range(5):
            last = await client.put("/t/a", str(i).encode())
        await client.compact(last)
        with pytest.raises(EtcdCompacted) as info:
            # etcd says so in the create response or in the next one
            stream = await client.watch("/t/", start_revision=first)
            try:
                await asyncio.wait_for(stream.next(), 5)
            finally:
                await stream.aclose()
        assert info.value.compact_revision == last


async def test_leases(etcd: EtcdCluster) -> None:
    async with EtcdClient(etcd.endpoints) as client:
        lease = await client.grant_lease(5)
        await client.put("/t/leased", b"x", lease=lease)
        kv = await client.get("/t/leased")
        assert kv is not None and kv.lease == lease
        assert await client.keepalive_once(lease) == 5
        await client.revoke_lease(lease)
        assert await client.get("/t/leased") is None
        assert await client.keepalive_once(lease) == 0
        await client.revoke_lease(lease)  # revoking twice is fine


async def test_writes_continue_through_leader_sigkill(etcd3: EtcdCluster) -> None:
    """A 3-member cluster: SIGKILL the leader; the next writes land on the others."""
    async with EtcdClient(etcd3.endpoints, timeout=3.0) as client:
        await client.put("/t/before", b"1")
        etcd3.kill(etcd3.leader())
        for i in range(20):
            await client.put(f"/t/after{i}", b"1")
        _, kvs = await client.get_prefix("/t/")
        assert len(kvs) == 21


def test_https_endpoints_are_accepted_and_mixing_is_refused() -> None:
    """Before: EtcdClient refused https:// although settings accept it (a traceback at
    start). Now https:// works (tests/security/test_etcd_roles.py); bad mixes are refused."""
    from federation.etcd import EtcdTls

    EtcdClient(["https://127.0.0.1:2379"])  # system roots; no I/O yet
    with pytest.raises(ValueError, match="mix"):
        EtcdClient(["http://127.0.0.1:1", "https://127.0.0.1:2"])
    with pytest.raises(ValueError, match="endpoints are http"):
        EtcdClient(["http://127.0.0.1:1"], tls=EtcdTls(ca="ca.pem"))
    with pytest.raises(ValueError, match="unsupported etcd endpoint scheme"):
        EtcdClient(["ftp://127.0.0.1:1"])
    with pytest.raises(ValueError, match="needs its key"):
        EtcdTls(cert="c.pem")


def test_serve_check_accepts_https_etcd_and_refuses_half_credentials(tmp_path: Path) -> None:
    from tests.federation.test_serve_cli import gateway_settings, one_line_error, serve

    for etcd, code, needle in (
        ({"tls": {"ca": "/x/ca.pem", "cert": "/x/c.pem", "key": "/x/k.pem"}}, 0, ""),
        ({"tls": {"cert": "/x/c.pem"}}, 2, "needs its key"),
        ({"username": "u"}, 2, "go together"),
        ({"tls": {"vaultRole": "r"}}, 2, "vaultRole needs cert and key"),
    ):
        data = gateway_settings(public=free_port(), admin=free_port())
        data["etcd"] = {"endpoints": ["https://127.0.0.1:2379"], **etcd}
        config = tmp_path / "gw.yaml"
        config.write_text(yaml.safe_dump(data))
        result = serve(config, "--check")
        if code == 0:
            assert result.returncode == 0, result.stderr
        else:
            one_line_error(result, code, needle)
