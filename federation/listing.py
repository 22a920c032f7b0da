"""Reading a whole prefix in pages, at one revision.

A federation of 1,000 clusters holds more under its prefix than one gRPC answer may
carry (64 MiB): :func:`list_prefix` reads it in pages of ``page`` keys, the first at
the current revision R (linearizable), the next ones at R, so that the result is one
consistent cut as if read at once. Each page resumes after the last key of the
previous one. A revision that is compacted raises :class:`~federation.etcd.EtcdCompacted`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from federation.etcd import KV, EtcdClient
from federation.keys import range_end

DEFAULT_PAGE = 1000  # keys per answer: well under the receive limit for values < 64 kB


async def list_prefix(
    client: EtcdClient, prefix: str, *, revision: int = 0, page: int = DEFAULT_PAGE
) -> tuple[int, list[KV]]:
    """Every key under ``prefix`` at ``revision`` (0 = now): (revision read, kvs by key)."""
    at = revision
    out: list[KV] = []
    async for read_at, kvs in pages(client, prefix, revision=revision, page=page):
        at = read_at
        out.extend(kvs)
    return at, out


async def pages(
    client: EtcdClient, prefix: str, *, revision: int = 0, page: int = DEFAULT_PAGE
) -> AsyncIterator[tuple[int, list[KV]]]:
    """:func:`list_prefix` one page at a time: (revision read, this page's kvs by key).

    Every page is read at the first page's revision; the caller may work on a page
    before asking for the next one (the watcher decodes it while the next is read)."""
    start = prefix.encode()
    end = range_end(start)
    at = revision
    while True:
        read_at, kvs, more = await client.get_range_page(start, end, revision=at, limit=page)
        if at == 0:
            at = read_at
        yield at, kvs
        if not more or not kvs:
            return
        start = kvs[-1].key.encode() + b"\0"  # the next key after the last one read
