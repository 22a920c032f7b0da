"""The per-name order lock on a real etcd: one holder, a lost lease is noticed."""

from __future__ import annotations

from federation.acme_lock import AcmeLock
from federation.etcd import EtcdClient
from federation.keys import KeyLayout
from tests.support.etcd import EtcdCluster
from tests.support.wait import async_wait_for


async def test_one_holder_and_a_lost_lease_is_noticed(etcd: EtcdCluster) -> None:
    async with EtcdClient(etcd.endpoints) as client:
        a = AcmeLock(client, "/fedgate/", "gw-a", ttl=1.5)
        b = AcmeLock(client, "/fedgate/", "gw-b", ttl=1.5)
        async with a.hold("shop.example.com") as held:
            assert held is not None
            assert await a.holder("shop.example.com") == "gw-a"
            async with b.hold("shop.example.com") as other:
                assert other is None  # one order per name
            await held.publish("tok", "tok.thumb")
            # the lease lapses (etcd revoked it, as after a partition): the holder learns it
            await client.revoke_lease(held.lease)
            await async_wait_for(lambda: held.lost, timeout=5, what="lost lease noticed")
            assert await client.get(KeyLayout().acme_challenge("tok")) is None
            async with b.hold("shop.example.com") as taken:
                assert taken is not None  # the next gateway takes over
        assert await a.holder("shop.example.com") is None  # released: no stuck lock


def test_every_challenge_is_accepted_and_a_missing_eab_key_is_a_one_line_error() -> None:
    import pytest

    from federation.acme_gateway import acme_config
    from federation.settings import AcmeSettings

    for form in ("http-01", "tls-alpn-01", "dns-01"):
        assert acme_config(AcmeSettings.model_validate({"challenge": form})).challenge == form
    with pytest.raises(ValueError, match="challenge"):
        AcmeSettings.model_validate({"challenge": "tls-sni-01"})
    with pytest.raises(ValueError, match=r"acme\.eab\.hmacKeyFile /nonexistent/k: "):
        acme_config(
            AcmeSettings.model_validate({"eab": {"kid": "k", "hmacKeyFile": "/nonexistent/k"}})
        )
    with pytest.raises(ValueError, match="ACME directory"):
        AcmeSettings.model_validate({"directory": "ftp://x"})
