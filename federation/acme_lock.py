"""One ACME order per name across the federation: a short etcd lease-lock per name.

The gateway that holds ``{p}acme/lock/{name}`` (:class:`federation.leaselock.LeaseLock`:
created under its own short lease, kept alive while the order runs) orders; the others
wait and read Vault. A holder that dies stops renewing its lease, etcd deletes the key
after the TTL and the next gateway takes over -- and, before ordering, checks Vault for
a certificate the dead holder may already have stored (no duplicate order). The
challenges of the order (HTTP-01 tokens, the TLS-ALPN-01 key authorization, the DNS-01
TXT value) are published under the same lease so they vanish with the holder too. The
account is created under the same kind of lock (:data:`ACCOUNT`), so N gateways
starting at once with no account in Vault register one.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from federation.etcd import EtcdClient
from federation.keys import KeyLayout
from federation.leaselock import Held as LockHeld
from federation.leaselock import LeaseLock

ACCOUNT = "@account"  # the lock of the first account registration (never a hostname)


class AcmeLock:
    def __init__(self, etcd: EtcdClient, prefix: str, holder: str, *, ttl: float = 10.0) -> None:
        self._etcd = etcd
        self._prefix = prefix
        self._holder = holder
        self._ttl = ttl

    def _lock(self, name: str) -> LeaseLock:
        key = KeyLayout(self._prefix).acme_lock(name)
        return LeaseLock(self._etcd, key, self._holder, ttl=self._ttl)

    async def holder(self, name: str) -> str | None:
        return await self._lock(name).holder()

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[Held | None]:
        """Yields a :class:`Held` when this process got the lock, else None."""
        async with self._lock(name).hold() as lock:
            yield None if lock is None else Held(self._etcd, self._prefix, lock)


class Held:
    """A held lock: publishes the order's challenges under the holder's lease
    (:mod:`federation.acme_records` says what each form is)."""

    def __init__(self, etcd: EtcdClient, prefix: str, lock: LockHeld) -> None:
        self._etcd = etcd
        self._layout = KeyLayout(prefix)
        self._lock = lock
        self.lease = lock.lease

    @property
    def lost(self) -> bool:
        """The lease could not be kept alive: another may hold the lock."""
        return self._lock.lost

    def key(self, form: str, ident: str) -> str:
        """The etcd key of one challenge: ``http-01`` by token, the others by name."""
        if form == "tls-alpn-01":
            return self._layout.acme_alpn(ident)
        if form == "dns-01":
            return self._layout.acme_dns(ident)
        return self._layout.acme_challenge(ident)

    async def publish(self, token: str, key_authorization: str, form: str = "http-01") -> str:
        key = self.key(form, token)
        await self._etcd.put(key, key_authorization.encode(), lease=self.lease)
        return key

    async def withdraw(self, token: str, form: str = "http-01") -> None:
        await self._etcd.delete(self.key(form, token))
