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
import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import aetcd
import aetcd.rpc as rpc

from federation.keys import range_end

__all__ = [
    "KV",
    "Delete",
    "EtcdClient",
    "EtcdCompacted",
    "EtcdError",
    "EtcdUnavailable",
    "Guard",
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


class EtcdError(Exception):
    """An etcd call failed; the message is one line."""


class EtcdUnavailable(EtcdError):
    """Every endpoint failed (or the cluster has no leader); the message is one line."""


class EtcdCompacted(EtcdError):
    """The revision asked for was compacted away; reload from ``compact_revision``."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"etcd revision compacted (oldest kept: {compact_revision})")
        self.compact_revision = compact_revision


@dataclass(frozen=True, slots=True)
class KV:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int


@dataclass(frozen=True, slots=True)
class WatchEvent:
    kind: Literal["put", "delete"]
    kv: KV  # for a delete: key and mod_revision (the revision of the delete) only


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """One whole WatchResponse: every event of every transaction in it."""

    revision: int  # header.revision: the store revision when the response was sent
    events: tuple[WatchEvent, ...] = ()
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    cancel_reason: str = ""

    @property
    def progress(self) -> bool:
        """A progress notification (no events): the stream is alive."""
        return not self.events and not self.created and not self.canceled

    @property
    def last_event_revision(self) -> int:
        return max((e.kv.mod_revision for e in self.events), default=0)


# ----------------------------------------------------------------------- transactions

CompareTarget = Literal["mod", "create", "version"]
CompareOp = Literal["==", "!=", "<", ">"]


@dataclass(frozen=True, slots=True)
class Guard:
    """A transaction compare: ``target(key) op value``; with ``prefix`` every key under it."""

    key: str
    target: CompareTarget
    op: CompareOp
    value: int
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    key: str
    prefix: bool = False


_TARGETS = {"mod": "MOD", "create": "CREATE", "version": "VERSION"}
_TARGET_FIELD = {"mod": "mod_revision", "create": "create_revision", "version": "version"}
_RESULTS = {"==": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}


def _compare(g: Guard) -> Any:
    c = rpc.Compare()
    c.key = g.key.encode()
    if g.prefix:
        c.range_end = range_end(c.key)
    c.target = rpc.Compare.CompareTarget.Value(_TARGETS[g.target])
    c.result = rpc.Compare.CompareResult.Value(_RESULTS[g.op])
    setattr(c, _TARGET_FIELD[g.target], g.value)
    return c


def _request_op(op: Put | Delete) -> Any:
    if isinstance(op, Put):
        put = rpc.PutRequest(key=op.key.encode(), value=op.value, lease=op.lease or 0)
        return rpc.RequestOp(request_put=put)
    key = op.key.encode()
    delete = rpc.DeleteRangeRequest(key=key, range_end=range_end(key) if op.prefix else b"")
    return rpc.RequestOp(request_delete_range=delete)


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


def _host_port(endpoint: str) -> tuple[str, int]:
    url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    if url.scheme not in ("http", ""):
        raise ValueError(f"unsupported etcd endpoint scheme (only http): {endpoint}")
    if not url.hostname:
        raise ValueError(f"not an etcd endpoint: {endpoint!r}")
    try:
        port = url.port or 2379
    except ValueError:
        raise ValueError(f"not an etcd endpoint: {endpoint!r}") from None
    return url.hostname, port


def _kv(kv: Any) -> KV:
    return KV(
        key=kv.key.decode("utf-8", "surrogateescape"),
        value=bytes(kv.value),
        mod_revision=int(kv.mod_revision),
        create_revision=int(kv.create_revision),
        lease=int(kv.lease),
    )


def _is_rpc_error(exc: BaseException) -> bool:
    return isinstance(exc, rpc.AioRpcError)


def _code(exc: Any) -> str:
    try:
        return str(exc.code().name)
    except Exception:  # pragma: no cover - defensive
        return "UNKNOWN"


def _one_line(exc: BaseException) -> str:
    if _is_rpc_error(exc):
        e: Any = exc
        details = (e.details() or "").strip().splitlines()
        return f"{_code(e)}: {details[0] if details else 'no details'}"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- client


class EtcdClient:
    """An etcd v3 client over several endpoints of one cluster."""

    def __init__(self, endpoints: Sequence[str], *, timeout: float = 2.0) -> None:
        eps = parse_endpoints(endpoints)
        if not eps:
            raise ValueError("no etcd endpoint given")
        self._endpoints = eps
        self._targets = [_host_port(e) for e in eps]
        self._timeout = timeout
        # one attempt on one member: shorter than the whole call, so a request stuck on a
        # member that lost its leader (a proposal dropped in an election) moves on in time
        self._attempt = max(0.5, timeout / 2)
        self._clients: dict[int, Any] = {}
        self._index = 0
        self._connected: int | None = None  # index of the endpoint in use, once probed
        self._lock: asyncio.Lock | None = None
        self._closed = False

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

    def _client_for(self, index: int) -> Any:
        client = self._clients.get(index)
        if client is None:
            host, port = self._targets[index]
            client = aetcd.Client(host=host, port=port, options=dict(_CHANNEL_OPTIONS))
            self._clients[index] = client
        return client

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
                await asyncio.wait_for(channel.wait_for_state_change(state), remaining)
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
            with contextlib.suppress(Exception):  # closing a broken channel
                await client.close()

    async def __aenter__(self) -> EtcdClient:
        await self.connect()
        return self

    async def __aexit__(
        self, tp: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _current(self) -> tuple[int, Any]:
        await self.connect()
        index = self._index
        return index, self._client_for(index)

    async def _call(self, what: str, fn: Any, *, idempotent: bool = True) -> Any:
        """Run ``await fn(aetcd_client)`` on the current endpoint, failing over."""
        n = len(self._endpoints)
        deadline = time.monotonic() + self._timeout
        attempts = 0  # endpoints tried
        rounds = 0  # backoff pauses taken
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
                rpc.RangeRequest(key=key.encode()), timeout=self._attempt, metadata=_REQUIRE_LEADER
            )

        resp = await self._call("get", fn)
        return _kv(resp.kvs[0]) if resp.kvs else None

    async def get_prefix(self, prefix: str, *, revision: int = 0) -> tuple[int, list[KV]]:
        """Every key under ``prefix`` (one linearizable read): (revision of the read, kvs)."""
        key = prefix.encode()
        req = rpc.RangeRequest(key=key, range_end=range_end(key), revision=revision)

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
            return await c.kvstub.Put(req, timeout=self._attempt, metadata=_REQUIRE_LEADER)

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
            return await c.kvstub.DeleteRange(req, timeout=self._attempt, metadata=_REQUIRE_LEADER)

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
            compare=[_compare(g) for g in guards],
            success=[_request_op(op) for op in success],
            failure=[_request_op(op) for op in failure],
        )

        async def fn(c: Any) -> Any:
            return await c.kvstub.Txn(req, timeout=self._timeout, metadata=_REQUIRE_LEADER)

        resp = await self._call("txn", fn, idempotent=False)
        return bool(resp.succeeded), int(resp.header.revision)

    async def compact(self, revision: int, *, physical: bool = True) -> None:
        req = rpc.CompactionRequest(revision=revision, physical=physical)

        async def fn(c: Any) -> Any:
            return await c.kvstub.Compact(req, timeout=max(self._timeout, 10.0))

        await self._call("compact", fn)

    # -- leases
    async def grant_lease(self, ttl: float) -> int:
        req = rpc.LeaseGrantRequest(TTL=max(1, math.ceil(ttl)))

        async def fn(c: Any) -> Any:
            return await c.leasestub.LeaseGrant(
                req, timeout=self._attempt, metadata=_REQUIRE_LEADER
            )

        resp = await self._call("lease grant", fn)
        if resp.error:
            raise EtcdError(f"etcd lease grant failed: {resp.error}")
        return int(resp.ID)

    async def revoke_lease(self, lease_id: int) -> None:
        req = rpc.LeaseRevokeRequest(ID=lease_id)

        async def fn(c: Any) -> Any:
            return await c.leasestub.LeaseRevoke(
                req, timeout=self._attempt, metadata=_REQUIRE_LEADER
            )

        try:
            await self._call("lease revoke", fn)
        except EtcdError as exc:
            if "lease not found" not in str(exc):
                raise

    async def keepalive_once(self, lease_id: int) -> float:
        """Refresh a lease once: its new TTL in seconds, or 0 when it has expired."""

        async def fn(c: Any) -> Any:
            call = c.leasestub.LeaseKeepAlive(timeout=self._attempt, metadata=_REQUIRE_LEADER)
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
                req, timeout=self._attempt, metadata=_REQUIRE_LEADER
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
        index, client = await self._current()
        stream = WatchStream(self, index, client, timeout=self._timeout)
        key = prefix.encode()
        create = rpc.WatchCreateRequest(
            key=key,
            range_end=range_end(key),
            start_revision=start_revision,
            progress_notify=progress_notify,
            fragment=False,
        )
        try:
            await stream._open(create)
        except BaseException:
            await stream.aclose()
            raise
        return stream


class LeaseNotFound(EtcdError):
    """The lease named in a call does not exist (it expired or was revoked)."""


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
        self._call = stub.Watch(metadata=_REQUIRE_LEADER)

        async def create_watch() -> WatchBatch:
            await self._call.write(rpc.WatchRequest(create_request=create))
            return await self._read()

        try:
            # the whole exchange under one deadline: a write on a stream whose member is
            # going away can otherwise wait forever
            first = await asyncio.wait_for(create_watch(), self._timeout)
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
            await asyncio.wait_for(self._call.write(request), self._timeout)
        except TimeoutError:
            raise self.unavailable("progress request not sent in time") from None
        except Exception as exc:
            raise self.unavailable(_one_line(exc)) from None

    async def aclose(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None
