"""How big an etcd transaction may be, and cutting a write into transactions that fit.

etcd refuses a transaction with more than ``--max-txn-ops`` compares or operations
("too many operations in txn request") and a request larger than
``--max-request-bytes`` ("request is too large"). Neither limit is published by the
API, so :func:`probe_limits` asks in the only way etcd answers, without writing
anything:

- operations: a *read-only* transaction of K compares (no puts, so it never reaches
  raft) is accepted iff K <= --max-txn-ops; a bounded binary search finds the limit,
  up to what the write needs;
- bytes: a transaction whose one compare can never hold (``version < 0``) and whose
  success branch puts a value of the size we mean to send goes through raft's size
  check and then writes nothing; halved until accepted.

Sizes are estimated from keys and values plus a per-item overhead, and every
transaction is cut to stay under 90 % of the byte limit (the raft header and
protobuf framing take the rest).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from federation.etcd import Delete, EtcdClient, EtcdError, Guard, Put

DEFAULT_MAX_TXN_OPS = 128  # etcd's default --max-txn-ops
DEFAULT_MAX_REQUEST_BYTES = 1536 * 1024  # etcd's default --max-request-bytes (1.5 MiB)
_MIN_REQUEST_BYTES = 16 * 1024
_OP_OVERHEAD = 32  # protobuf tags, lengths, lease id of one RequestOp
_GUARD_OVERHEAD = 24
_FIXED_OVERHEAD = 1024  # TxnRequest framing and the raft request header
_PROBE_OPS_CAP = 16384


class TxnTooLarge(EtcdError):
    """etcd refused a transaction for its size: not retriable, the message is one line."""


def too_large(exc: EtcdError) -> bool:
    """Whether an etcd error says the request was over a limit (never worth a retry)."""
    text = str(exc)
    return any(
        marker in text
        for marker in ("request is too large", "too many operations", "larger than max")
    )


@dataclass(frozen=True, slots=True)
class Limits:
    max_ops: int = DEFAULT_MAX_TXN_OPS
    max_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    probed: bool = False

    @property
    def budget(self) -> int:
        """Bytes one transaction may carry (keys, values, guards), with a margin."""
        return max(1024, int(self.max_bytes * 0.9) - _FIXED_OVERHEAD)

    def describe(self) -> str:
        how = "asked etcd" if self.probed else "from flags"
        return f"{self.max_ops} operations and {self.max_bytes} bytes per transaction ({how})"


def op_bytes(op: Put | Delete) -> int:
    if isinstance(op, Put):
        return len(op.key) + len(op.value) + _OP_OVERHEAD
    return 2 * len(op.key) + _OP_OVERHEAD


def guard_bytes(guard: Guard) -> int:
    return (2 if guard.prefix else 1) * len(guard.key) + _GUARD_OVERHEAD


def txn_bytes(guards: Sequence[Guard], ops: Sequence[Put | Delete]) -> int:
    return sum(guard_bytes(g) for g in guards) + sum(op_bytes(op) for op in ops)


def fits(limits: Limits, guards: Sequence[Guard], ops: Sequence[Put | Delete]) -> bool:
    return (
        len(guards) <= limits.max_ops
        and len(ops) <= limits.max_ops
        and txn_bytes(guards, ops) <= limits.budget
    )


def chunk(
    ops: Sequence[Put | Delete],
    limits: Limits,
    *,
    guard_cost: int,
    last_reserve_ops: int,
    last_reserve_bytes: int,
) -> list[list[Put | Delete]]:
    """Cut ``ops`` into transactions under both limits, in order.

    Each transaction also carries guards of ``guard_cost`` bytes; the last one keeps
    room for ``last_reserve_ops`` more operations of ``last_reserve_bytes`` in total.
    A single operation too big for any transaction raises :class:`TxnTooLarge`.
    """
    budget = limits.budget - guard_cost
    chunks: list[list[Put | Delete]] = []
    current: list[Put | Delete] = []
    size = 0
    for op in ops:
        cost = op_bytes(op)
        if cost > budget:
            raise TxnTooLarge(
                f"{op.key}: one value of {cost} bytes does not fit in an etcd request of "
                f"{limits.max_bytes} bytes (--max-request-bytes)"
            )
        if current and (len(current) + 1 > limits.max_ops or size + cost > budget):
            chunks.append(current)
            current, size = [], 0
        current.append(op)
        size += cost
    if (
        len(current) + last_reserve_ops > limits.max_ops or size + last_reserve_bytes > budget
    ) and current:
        chunks.append(current)
        current = []
    chunks.append(current)
    return chunks


async def _ops_accepted(client: EtcdClient, key: str, count: int) -> bool:
    guards = [Guard(key, "version", "<", 0)] * count
    try:
        await client.txn(guards, [])
    except EtcdError as exc:
        if too_large(exc):
            return False
        raise
    return True


async def _bytes_accepted(client: EtcdClient, key: str, size: int) -> bool:
    probe = Put(key, b"x" * max(0, size - len(key) - _OP_OVERHEAD - _FIXED_OVERHEAD))
    try:
        ok, _ = await client.txn([Guard(key, "version", "<", 0)], [probe])
    except EtcdError as exc:
        if too_large(exc):
            return False
        raise
    if ok:  # pragma: no cover - a version is never negative
        raise EtcdError("etcd accepted an impossible compare; limits not probed")
    return True


async def probe_limits(
    client: EtcdClient, key: str, *, need_ops: int, need_bytes: int, ceiling: Limits
) -> Limits:
    """The limits etcd enforces, searched up to what a write of ``need_*`` uses.

    ``ceiling.max_bytes`` is the most this side will send in one request (the flag);
    operations are searched up to ``need_ops`` even above ``ceiling.max_ops``, since an
    etcd started with a higher --max-txn-ops lets a big apply use fewer transactions.
    ``key`` is never written (its compares cannot hold).
    """
    want_ops = max(1, min(max(need_ops, 1), _PROBE_OPS_CAP))
    if await _ops_accepted(client, key, want_ops):
        max_ops = want_ops
    else:
        low, high = 1, want_ops - 1  # low is accepted (etcd allows at least 1)
        while low < high:
            mid = (low + high + 1) // 2
            if await _ops_accepted(client, key, mid):
                low = mid
            else:
                high = mid - 1
        max_ops = low
    if need_ops > want_ops:  # above the probe cap: trust the flag for the rest
        max_ops = max(max_ops, min(ceiling.max_ops, need_ops))
    size = max(_MIN_REQUEST_BYTES, min(ceiling.max_bytes, need_bytes + _FIXED_OVERHEAD * 2))
    max_bytes = ceiling.max_bytes  # the first probe passing: what the write needs is accepted
    while not await _bytes_accepted(client, key, size):
        if size <= _MIN_REQUEST_BYTES:
            raise TxnTooLarge(
                f"etcd refuses requests of {size} bytes; is its --max-request-bytes tiny?"
            )
        size = max(_MIN_REQUEST_BYTES, size // 2)
        max_bytes = size
    return Limits(max_ops=max_ops, max_bytes=max_bytes, probed=True)
