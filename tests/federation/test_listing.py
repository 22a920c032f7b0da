"""federation.listing: a prefix read in pages is one consistent cut (real etcd)."""

from __future__ import annotations

import pytest

from federation.etcd import EtcdClient, EtcdCompacted
from federation.listing import list_prefix
from tests.support.etcd import EtcdCluster

PREFIX = "/fedgate/"


async def test_pages_give_one_cut_at_the_first_pages_revision(etcd: EtcdCluster) -> None:
    async with EtcdClient(etcd.endpoints) as client:
        for i in range(25):
            await client.put(f"{PREFIX}k/{i:03d}", f"v{i}".encode())
        await client.put("/other/x", b"outside")
        whole_rev, whole = await client.get_prefix(PREFIX)
        rev, paged = await list_prefix(client, PREFIX, page=4)
        assert rev == whole_rev and paged == whole and len(paged) == 25

        # writes between pages are not seen: every page is read at the first one's revision
        seen: list[int] = []
        original = client.get_range_page

        async def spy(key: bytes, end: bytes, *, revision: int = 0, limit: int = 0):  # type: ignore[no-untyped-def]
            seen.append(revision)
            if len(seen) == 2:
                await client.put(f"{PREFIX}k/000", b"changed")
                await client.put(f"{PREFIX}k/999", b"new")
            return await original(key, end, revision=revision, limit=limit)

        client.get_range_page = spy  # type: ignore[method-assign]
        rev2, paged2 = await list_prefix(client, PREFIX, page=4)
        assert seen[0] == 0 and set(seen[1:]) == {rev2}
        assert paged2 == whole and rev2 == whole_rev
        client.get_range_page = original  # type: ignore[method-assign]

        # an old revision that is compacted: EtcdCompacted
        now, _ = await list_prefix(client, PREFIX)
        await client.compact(now)
        with pytest.raises(EtcdCompacted):
            await list_prefix(client, PREFIX, revision=whole_rev, page=4)
