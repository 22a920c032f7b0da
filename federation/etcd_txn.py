"""etcd transactions: guards (compares) and operations, as value objects.

:meth:`federation.etcd.EtcdClient.txn` takes a list of :class:`Guard` and lists of
:class:`Put` / :class:`Delete`; the conversion to etcd's protobuf messages lives here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import aetcd.rpc as rpc

from federation.keys import range_end

__all__ = ["CompareOp", "CompareTarget", "Delete", "Guard", "Put", "compare", "request_op"]

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


def compare(g: Guard) -> Any:
    c = rpc.Compare()
    c.key = g.key.encode()
    if g.prefix:
        c.range_end = range_end(c.key)
    c.target = rpc.Compare.CompareTarget.Value(_TARGETS[g.target])
    c.result = rpc.Compare.CompareResult.Value(_RESULTS[g.op])
    setattr(c, _TARGET_FIELD[g.target], g.value)
    return c


def request_op(op: Put | Delete) -> Any:
    if isinstance(op, Put):
        put = rpc.PutRequest(key=op.key.encode(), value=op.value, lease=op.lease or 0)
        return rpc.RequestOp(request_put=put)
    key = op.key.encode()
    delete = rpc.DeleteRangeRequest(key=key, range_end=range_end(key) if op.prefix else b"")
    return rpc.RequestOp(request_delete_range=delete)
