"""One ACME order per name across the federation: a short etcd lease-lock per name.

The gateway that creates ``{p}acme/lock/{name}`` (a transaction guarded on the key not
existing) under its own short lease orders; the others wait and read Vault. The lease
is kept alive while the order runs; a holder that dies stops renewing it, etcd deletes
the key after the TTL and the next gateway takes over -- and, before ordering, checks
Vault for a certificate the dead holder may already have stored (no duplicate order).
The challenges of the order (HTTP-01 tokens, the TLS-ALPN-01 key authorization, the
DNS-01 TXT value) are published under the same lease so they vanish with the holder
too. The account is created under the same kind of lock (:data:`ACCOUNT`), so N
gateways starting at once with no account in Vault register one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from federation.etcd import EtcdClient, EtcdError, Guard, Put
from federation.keys import KeyLayout

ACCOUNT = "@account"  # the lock of the first account registration (never a hostname)


class AcmeLock:
    def __init__(self, etcd: EtcdClient, prefix: str, holder: str, *, ttl: float = 10.0) -> None:
        self._etcd = etcd
        self._prefix = prefix
        self._holder = holder
        self._ttl = ttl

    async def holder(self, name: str) -> str | None:
        kv = await self._etcd.get(KeyLayout(self._prefix).acme_lock(name))
        return kv.value.decode(errors="replace") if kv is not None else None

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[Held | None]:
        """Yields a :class:`Held` when this process got the lock, else None."""
        key = KeyLayout(self._prefix).acme_lock(name)
        lease = await self._etcd.grant_lease(self._ttl)
        ok, _ = await self._etcd.txn(
            [Guard(key, "create", "==", 0)], [Put(key, self._holder.encode(), lease=lease)]
        )
        if not ok:
            await self._etcd.revoke_lease(lease)
            yield None
            return
        held = Held(self._etcd, self._prefix, lease)
        keeper = asyncio.create_task(self._keep(held))
        try:
            yield held
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            with contextlib.suppress(Exception):
                await self._etcd.revoke_lease(lease)  # frees the lock and the tokens

    async def _keep(self, held: Held) -> None:
        """Refresh the lease; when that fails the lock may pass to another gateway, so
        the holder is told (:attr:`Held.lost`) and places no further order step."""
        try:
            while True:
                await asyncio.sleep(self._ttl / 3)
                if await self._etcd.keepalive_once(held.lease) <= 0:
                    break
        except EtcdError:
            pass
        held.lost = True


class Held:
    """A held lock: publishes the order's challenges under the holder's lease
    (:mod:`federation.acme_records` says what each form is)."""

    def __init__(self, etcd: EtcdClient, prefix: str, lease: int) -> None:
        self._etcd = etcd
        self._layout = KeyLayout(prefix)
        self.lease = lease
        self.lost = False  # the lease could not be kept alive: another may hold the lock

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
