"""The etcd client's value types and errors (``federation.etcd`` re-exports them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import aetcd.rpc as rpc

from federation.frozen import builder

__all__ = [
    "KV",
    "EtcdCompacted",
    "EtcdError",
    "EtcdUnavailable",
    "LeaseNotFound",
    "WatchBatch",
    "WatchEvent",
    "code_of",
    "is_rpc_error",
    "kv_of",
    "one_line",
]


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


class LeaseNotFound(EtcdError):
    """The lease named in a call does not exist (it expired or was revoked)."""


def kv_of(kv: Any) -> KV:
    return _KV(  # KV(key, value, mod_revision, create_revision, lease): once per key listed
        kv.key.decode("utf-8", "surrogateescape"),
        bytes(kv.value),
        int(kv.mod_revision),
        int(kv.create_revision),
        int(kv.lease),
    )


_KV: Callable[[str, bytes, int, int, int], KV] = builder(KV)  # federation.frozen


def is_rpc_error(exc: BaseException) -> bool:
    return isinstance(exc, rpc.AioRpcError)


def code_of(exc: Any) -> str:
    try:
        return str(exc.code().name)
    except Exception:  # pragma: no cover - defensive
        return "UNKNOWN"


def one_line(exc: BaseException) -> str:
    if is_rpc_error(exc):
        e: Any = exc
        details = (e.details() or "").strip().splitlines()
        return f"{code_of(e)}: {details[0] if details else 'no details'}"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
