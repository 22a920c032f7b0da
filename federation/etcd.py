"""A small asyncio etcd v3 client over aetcd, with endpoint failover.

``aetcd.Client`` talks to one host. :class:`EtcdClient` keeps one aetcd client (one
gRPC channel) per endpoint and sends each call to the *current* endpoint; when a call
fails for a reason another member could fix (connection refused or reset, no leader,
leader changed, a timeout), it moves to the next endpoint and tries again, round after
round with a short backoff, until ``timeout`` seconds have passed. Then it raises
:class:`EtcdUnavailable` with a one-line message. A 3-member cluster therefore keeps
working while one member (the leader included) is SIGKILLed.

Reads are linearizable (etcd's default): a read never returns older data than a
write that completed before it, whichever member answers.

The watch uses the raw gRPC stream (:meth:`EtcdClient.watch`), not aetcd's watcher,
because aetcd hands out events one at a time and loses the response boundaries: here
every :class:`WatchBatch` is one whole ``WatchResponse``, and all events of one etcd
transaction arrive in one batch (fragmentation is off).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal

import aetcd.rpc as rpc

from federation.etcd_conn import Connection, EtcdAuth, EtcdTls, parse_target
from federation.etcd_txn import Delete, Guard, Put, compare, request_op
from federation.etcd_types import (
    KV,
    EtcdCompacted,
    EtcdError,
    EtcdUnavailable,
    LeaseNotFound,
    WatchBatch,
    WatchEvent,
)
from federation.etcd_types import code_of as _code
from federation.etcd_types import is_rpc_error as _is_rpc_error
from federation.etcd_types import kv_of as _kv
from federation.etcd_types import one_line as _one_line
from federation.keys import range_end

__all__ = [
    "KV",
    "Delete",
    "EtcdAuth",
    "EtcdClient",
    "EtcdCompacted",
    "EtcdError",
    "EtcdTls",
    "EtcdUnavailable",
    "Guard",
    "LeaseNotFound",
    "Put",
    "WatchBatch",
    "WatchEvent",
    "WatchStream",
    "parse_endpoints",
]

# gRPC channel options: reconnect quickly after a member comes back (the default
# backoff grows to two minutes), and allow large ranges.
_CHANNEL_OPTIONS = {
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    "grpc.max_receive_message_length": 64 * 1024 * 1024,
}

# codes another member (or the same one a moment later) may answer differently
_RETRIABLE = frozenset(
    {"UNAVAILABLE", "DEADLINE_EXCEEDED", "UNKNOWN", "CANCELLED", "RESOURCE_EXHAUSTED", "ABORTED"}
)

# ask the server to cancel a watch when its member loses the leader (clientv3 does the same)
_REQUIRE_LEADER = (("hasleader", "true"),)


# -------------------------------------------------------------------------- helpers


def parse_endpoints(value: str | Sequence[str]) -> list[str]:
    """``"http://a:2379,b:2379"`` or a list -> ``["http://a:2379", "http://b:2379"]``."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        out.append(item if "://" in item else f"http://{item}")
    return out


# --------------------------------------------------------------------------- client


class EtcdClient:
    """An etcd v3 client over several endpoints of one cluster."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = 2.0,
        tls: EtcdTls | None = None,
        auth: EtcdAuth | None = None,
        tls_check_interval: float = 5.0,
    ) -> None:
        eps = parse_endpoints(endpoints)
        if not eps:
            raise ValueError("no etcd endpoint given")
        schemes = {parse_target(e)[0] for e in eps}
        if len(schemes) > 1:
            raise ValueError("etcd endpoints mix http:// and https://")
        if tls is not None and schemes == {"http"}:
            raise ValueError("etcd TLS settings given but the endpoints are http://")
        self._endpoints = eps
        self._tls = tls
        self._auth = auth
        self._timeout = timeout
        # one attempt on one member: shorter than the whole call, so a request stuck on a
        # member that lost its leader (a proposal dropped in an election) moves on in time
        self._attempt = max(0.5, timeout / 2)
        self._clients: dict[int, Connection] = {}
        self._index = 0
        self._connected: int | None = None  # index of the endpoint in use, once probed
        self._lock: asyncio.Lock | None = None
        self._closed = False
        # rotated certificate files are picked up: their stamp is looked at every interval
        self._tls_check_interval = tls_check_interval
        self._tls_check_at = time.monotonic() + tls_check_interval
        self._tls_stamp = tls.stamp() if tls is not None else None

    # -- endpoints
    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(self._endpoints)

    @property
    def endpoint(self) -> str:
        """The endpoint calls go to now."""
        return self._endpoints[self._index]

    @property
    def timeout(self) -> float:
        return self._timeout

    def _client_for(self, index: int) -> Connection:
        client = self._clients.get(index)
        if client is None:
            client = Connection(
                self._endpoints[index],
                options=dict(_CHANNEL_OPTIONS),
                tls=self._tls,
                auth=self._auth,
                base_metadata=_REQUIRE_LEADER,
                timeout=self._attempt,
            )
            self._clients[index] = client
        return client

    async def reload_tls(self) -> None:
        """New client certificate files: close every channel; the next call reconnects."""
        clients, self._clients = self._clients, {}
        self._connected = None
        for client in clients.values():
            await client.close()

    def failed(self, index: int | None = None) -> None:
        """The current endpoint failed: the next call goes to the next one."""
        failed = self._index if index is None else index
        if failed == self._index:
            self._index = (self._index + 1) % len(self._endpoints)
            self._connected = None

    async def _probe(self, index: int, timeout: float) -> bool:
        client = self._client_for(index)
        await client.connect()  # creates the channel (no I/O)
        channel = client.channel
        deadline = time.monotonic() + timeout
        state = channel.get_state(try_to_connect=True)
        tried = state.name == "CONNECTING"
        while state.name != "READY":
            if state.name == "TRANSIENT_FAILURE" and tried:
                return False
            if state.name == "SHUTDOWN":
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                async with asyncio.timeout(remaining):
                    await channel.wait_for_state_change(state)
            except TimeoutError:
                return False
            state = channel.get_state(try_to_connect=True)
            tried = tried or state.name == "CONNECTING"
        return True

    async def connect(self) -> None:
        """Connect to the first endpoint that answers, starting at the current one."""
        if self._closed:
            raise EtcdUnavailable("etcd client is closed")
        if self._connected is not None:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._connected is not None:
                return
            n = len(self._endpoints)
            start = self._index
            for step in range(n):
                i = (start + step) % n
                if await self._probe(i, self._timeout):
                    self._index = i
                    self._connected = i
                    return
            raise EtcdUnavailable(f"etcd unreachable at {', '.join(self._endpoints)}")

    async def close(self) -> None:
        self._closed = True
        self._connected = None
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()

    async def __aenter__(self) -> EtcdClient:
        await self.connect()
        return self

    async def __aexit__(
        self, tp: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _current(self) -> tuple[int, Connection]:
        if self._tls is not None and time.monotonic() >= self._tls_check_at:
            self._tls_check_at = time.monotonic() + self._tls_check_interval
            stamp = self._tls.stamp()
            if stamp != self._tls_stamp:  # new certificate files: reconnect with them
                self._tls_stamp = stamp
                await self.reload_tls()
        await self.connect()
        index = self._index
        return index, self._client_for(index)

    async def _call(self, what: str, fn: Any, *, idempotent: bool = True) -> Any:
        """Run ``await fn(aetcd_client)`` on the current endpoint, failing over."""
        n = len(self._endpoints)
        deadline = time.monotonic() + self._timeout
        attempts = 0  # endpoints tried
        rounds = 0  # backoff pauses taken
        refreshed = False
        last = ""
        while True:
            try:
                index, client = await self._current()
            except EtcdUnavailable as exc:
                last = str(exc)
                attempts += n  # connect() tried every endpoint
            else:
                endpoint = self._endpoints[index]
                try:
                    await client.authenticate()
                    return await fn(client)
                except EtcdUnavailable as exc:  # raised by fn itself (a stream closed)
                    last = f"{endpoint}: {exc}"
                except Exception as exc:
                    if not _is_rpc_error(exc):
                        if not isinstance(exc, OSError | TimeoutError):
                            raise
                        last = f"{endpoint}: {_one_line(exc)}"
                    else:
                        code = _code(exc)
                        last = f"{endpoint}: {_one_line(exc)}"
                        if code == "UNAUTHENTICATED" and client.refresh() and not refreshed:
                            refreshed = True  # the token expired: authenticate, try again
                            continue
                        if code not in _RETRIABLE or "larger than max" in last:
                            # a request over the server's size limit fails everywhere
                            raise EtcdError(f"etcd {what} failed: {_one_line(exc)}") from None
                        if code == "DEADLINE_EXCEEDED" and not idempotent:
                            raise EtcdUnavailable(
                                f"etcd {what} timed out at {endpoint} (outcome unknown)"
                            ) from None
                self.failed(index)
                attempts += 1
            if self._closed:
                raise EtcdUnavailable("etcd client is closed")
            if attempts >= n and time.monotonic() >= deadline:
                if last.startswith("etcd unreachable"):
                    raise EtcdUnavailable(last)
                raise EtcdUnavailable(f"etcd {what} failed on every endpoint (last: {last})")
            if attempts // n > rounds:
                rounds = attempts // n
                await asyncio.sleep(min(0.05 * 2 ** (rounds - 1), 0.5))

    # -- key-value
    async def get(self, key: str) -> KV | None:
        async def fn(c: Any) -> Any:
            return await c.kvstub.Range(
                rpc.RangeRequest(key=key.encode()), timeout=self._attempt, metadata=c.metadata
            )

        resp = await self._call("get", fn)
        return _kv(resp.kvs[0]) if resp.kvs else None

    async def get_prefix(self, prefix: str, *, revision: int = 0) -> tuple[int, list[KV]]:
        """Every key under ``prefix`` (one linearizable read): (revision of the read, kvs)."""
        key = prefix.encode()
        req = rpc.RangeRequest(key=key, range_end=range_end(key), revision=revision)

        async def fn(c: Any) -> Any:
            return await c.kvstub.Range(req, timeout=max(self._timeout, 10.0), metadata=c.metadata)

        try:
            resp = await self._call("range", fn)
        except EtcdError as exc:
            if "compacted" in str(exc):
                raise EtcdCompacted(0) from None
            raise
        return int(resp.header.revision), [_kv(kv) for kv in resp.kvs]

    async def get_range_page(
        self, key: bytes, end: bytes, *, revision: int = 0, limit: int = 0
    ) -> tuple[int, list[KV], bool]:
        """One page of a range read: (revision of the read, kvs in key order, more left).

        ``federation.listing`` pages a whole prefix with it, so that no single answer
        exceeds the gRPC receive limit.
        """
        req = rpc.RangeRequest(key=key, range_end=end, revision=revision, limit=limit)

        async def fn(c: Any) -> Any:
            return await c.kvstub.Range(
                req, timeout=max(self._timeout, 10.0), metadata=_REQUIRE_LEADER
            )

        try:
            resp = await self._call("range", fn)
        except EtcdError as exc:
            if "compacted" in str(exc):
                raise EtcdCompacted(0) from None
            raise
        return int(resp.header.revision), [_kv(kv) for kv in resp.kvs], bool(resp.more)

    async def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        req = rpc.PutRequest(key=key.encode(), value=value, lease=lease or 0)

        async def fn(c: Any) -> Any:
            return await c.kvstub.Put(req, timeout=self._attempt, metadata=c.metadata)

        try:
            resp = await self._call("put", fn)
        except EtcdError as exc:
            if "lease not found" in str(exc):
                raise LeaseNotFound(str(exc)) from None
            raise
        return int(resp.header.revision)

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        k = key.encode()
        req = rpc.DeleteRangeRequest(key=k, range_end=range_end(k) if prefix else b"")

        async def fn(c: Any) -> Any:
            return await c.kvstub.DeleteRange(req, timeout=self._attempt, metadata=c.metadata)

        resp = await self._call("delete", fn)
        return int(resp.header.revision)

    async def txn(
        self,
        guards: Sequence[Guard],
        success: Sequence[Put | Delete],
        failure: Sequence[Put | Delete] = (),
    ) -> tuple[bool, int]:
        """One transaction: (whether every guard held, revision after it)."""
        req = rpc.TxnRequest(
            compare=[compare(g) for g in guards],
            success=[request_op(op) for op in success],
            failure=[request_op(op) for op in failure],
        )

        async def fn(c: Any) -> Any:
            return await c.kvstub.Txn(req, timeout=self._timeout, metadata=c.metadata)

        resp = await self._call("txn", fn, idempotent=False)
        return bool(resp.succeeded), int(resp.header.revision)

    async def compact(self, revision: int, *, physical: bool = True) -> None:
        req = rpc.CompactionRequest(revision=revision, physical=physical)

        async def fn(c: Any) -> Any:
            return await c.kvstub.Compact(
                req, timeout=max(self._timeout, 10.0), metadata=c.metadata
            )

        await self._call("compact", fn)

    # -- authentication and roles (fedgate etcd-bootstrap)
    async def auth_call(self, method: str, request: Any) -> Any:
        """One call of etcd's Auth service (``RoleAdd``, ``UserGrantRole``...): its response."""

        async def fn(c: Any) -> Any:
            return await getattr(c.authstub, method)(
                request, timeout=self._attempt, metadata=c.metadata
            )

        return await self._call(f"auth {method}", fn, idempotent=False)

    # -- leases
    async def grant_lease(self, ttl: float) -> int:
        req = rpc.LeaseGrantRequest(TTL=max(1, math.ceil(ttl)))

        async def fn(c: Any) -> Any:
            return await c.leasestub.LeaseGrant(req, timeout=self._attempt, metadata=c.metadata)

        resp = await self._call("lease grant", fn)
        if resp.error:
            raise EtcdError(f"etcd lease grant failed: {resp.error}")
        return int(resp.ID)

    async def revoke_lease(self, lease_id: int) -> None:
        req = rpc.LeaseRevokeRequest(ID=lease_id)

        async def fn(c: Any) -> Any:
            return await c.leasestub.LeaseRevoke(req, timeout=self._attempt, metadata=c.metadata)

        try:
            await self._call("lease revoke", fn)
        except EtcdError as exc:
            if "lease not found" not in str(exc):
                raise

    async def keepalive_once(self, lease_id: int) -> float:
        """Refresh a lease once: its new TTL in seconds, or 0 when it has expired."""

        async def fn(c: Any) -> Any:
            call = c.leasestub.LeaseKeepAlive(timeout=self._attempt, metadata=c.metadata)
            try:
                await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
                resp = await call.read()
            finally:
                call.cancel()
            if not isinstance(resp, rpc.LeaseKeepAliveResponse):
                raise EtcdUnavailable("lease keepalive stream closed")
            return resp

        resp = await self._call("lease keepalive", fn)
        return float(resp.TTL)

    async def lease_ttl(self, lease_id: int) -> float:
        """Remaining TTL of a lease (-1 when it does not exist)."""
        req = rpc.LeaseTimeToLiveRequest(ID=lease_id)

        async def fn(c: Any) -> Any:
            return await c.leasestub.LeaseTimeToLive(
                req, timeout=self._attempt, metadata=c.metadata
            )

        resp = await self._call("lease ttl", fn)
        return float(resp.TTL)

    # -- watch
    async def watch(
        self, prefix: str, *, start_revision: int, progress_notify: bool = True
    ) -> WatchStream:
        """Open a watch on every key under ``prefix`` from ``start_revision``.

        Waits for the server to confirm the watch. Raises :class:`EtcdCompacted` when
        ``start_revision`` was compacted, :class:`EtcdUnavailable` when no endpoint
        takes the watch.
        """
        key = prefix.encode()
        create = rpc.WatchCreateRequest(
            key=key,
            range_end=range_end(key),
            start_revision=start_revision,
            progress_notify=progress_notify,
            fragment=False,
        )
        for attempt in range(2):
            index, client = await self._current()
            try:
                await client.authenticate()
            except Exception as exc:
                if not _is_rpc_error(exc):
                    raise
                raise EtcdError(f"etcd watch failed: {_one_line(exc)}") from None
            stream = WatchStream(self, index, client, timeout=self._timeout)
            try:
                await stream._open(create)
            except EtcdUnavailable as exc:
                await stream.aclose()
                # an expired token: the watch is refused ("invalid auth token", or etcd
                # 3.5's "permission denied" for a stream without a valid user): once more
                stale = "invalid auth token" in str(exc) or "permission denied" in str(exc)
                if attempt == 0 and stale and client.refresh():
                    continue
                raise
            except BaseException:
                await stream.aclose()
                raise
            return stream
        raise EtcdUnavailable("etcd watch: unreachable")  # pragma: no cover - loop returns


class WatchStream:
    """One open watch: ``await stream.next()`` returns whole responses, in order."""

    def __init__(self, client: EtcdClient, index: int, aclient: Any, *, timeout: float) -> None:
        self._client = client
        self._index = index
        self._aclient = aclient
        self._timeout = timeout
        self._call: Any = None
        self.endpoint = client.endpoints[index]

    def unavailable(self, why: str) -> EtcdUnavailable:
        """Give this stream's endpoint up (the next call goes elsewhere): the error to raise."""
        self._client.failed(self._index)
        return EtcdUnavailable(f"etcd watch at {self.endpoint}: {why}")

    async def _open(self, create: Any) -> None:
        stub = rpc.WatchStub(self._aclient.channel)
        self._call = stub.Watch(metadata=self._aclient.metadata)

        try:
            # the whole exchange under one deadline (a write on a stream whose member is
            # going away can otherwise wait forever); not wait_for: it can drop a cancel
            async with asyncio.timeout(self._timeout):
                await self._call.write(rpc.WatchRequest(create_request=create))
                first = await self._read()
        except TimeoutError:
            raise self.unavailable("no answer to the watch request") from None
        except EtcdError:
            raise
        except Exception as exc:
            raise self.unavailable(_one_line(exc)) from None
        if first.compact_revision:
            raise EtcdCompacted(first.compact_revision)
        if first.canceled:
            raise self.unavailable(first.cancel_reason or "watch canceled")
        if not first.created:
            raise self.unavailable("unexpected first watch response")

    async def _read(self) -> WatchBatch:
        try:
            resp = await self._call.read()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise self.unavailable(_one_line(exc)) from None
        if not isinstance(resp, rpc.WatchResponse):
            raise self.unavailable("stream closed by the server")
        events = []
        for ev in resp.events:
            kind: Literal["put", "delete"] = "delete" if ev.type == rpc.Event.DELETE else "put"
            events.append(WatchEvent(kind, _kv(ev.kv)))
        return WatchBatch(
            revision=int(resp.header.revision),
            events=tuple(events),
            created=bool(resp.created),
            canceled=bool(resp.canceled),
            compact_revision=int(resp.compact_revision),
            cancel_reason=str(resp.cancel_reason),
        )

    async def next(self) -> WatchBatch:
        """The next response. Raises EtcdCompacted / EtcdUnavailable when the watch ends."""
        batch = await self._read()
        if batch.compact_revision:
            raise EtcdCompacted(batch.compact_revision)
        if batch.canceled:
            raise self.unavailable(batch.cancel_reason or "watch canceled by the server")
        return batch

    async def request_progress(self) -> None:
        """Ask the server for a progress notification (proves the stream is alive)."""
        request = rpc.WatchRequest(progress_request=rpc.WatchProgressRequest())
        try:
            async with asyncio.timeout(self._timeout):
                await self._call.write(request)
        except TimeoutError:
            raise self.unavailable("progress request not sent in time") from None
        except Exception as exc:
            raise self.unavailable(_one_line(exc)) from None

    async def aclose(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None
