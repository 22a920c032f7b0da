"""Registering a manifest in etcd: the diff, and transactions guarded by what was read.

``fedgate apply`` owns the *config* keys of the layout (``federation``, ``clusters/``,
``services/``, ``generation``, and the ``applying`` barrier; see :mod:`federation.keys`).
:func:`read_config` reads them in one linearizable read at revision R;
:func:`plan_apply` compares them with the manifest (decoded values, so a re-encoding
alone is not a change); :func:`execute` writes the change. Its guards are:

- no key under ``clusters/`` or ``services/`` was modified or created after R
  (a range compare: ``mod_revision < R + 1``);
- ``generation`` still has the mod revision read (every apply writes it, so another
  apply that landed meanwhile, pruning included, is seen), and the federation key was
  not created;
- every config key read still has its mod revision (catches a key deleted by hand), as
  long as these per-key compares fit in one transaction;
- no ``applying`` barrier exists (or, when taking a stale one over, it is the one read).

When everything fits in one transaction (etcd's ``--max-txn-ops`` and
``--max-request-bytes``, asked of etcd by :mod:`federation.txnsize`), it is one
transaction that also puts ``generation``. Otherwise it is the barrier protocol of
:mod:`federation.barrier`: transaction 0 puts ``applying``; the next ones, guarded by
its mod revision, write the chunks; the last one puts ``generation`` and deletes
``applying``. Either way no gateway sees half a manifest. Runtime keys (gateways,
endpoints, health) are never touched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from federation import codec
from federation.barrier import Barrier, barrier_value, generation_value, read_generation
from federation.etcd import KV, Delete, EtcdClient, EtcdCompacted, EtcdError, Guard, Put
from federation.keys import KeyLayout, Kind
from federation.limits import parse_json
from federation.model import Federation
from federation.txnsize import (
    Limits,
    TxnTooLarge,
    chunk,
    fits,
    guard_bytes,
    op_bytes,
    probe_limits,
    too_large,
)
from federation.valuediff import FieldChange, camel, field_changes

ChangeOp = Literal["add", "change", "remove", "keep"]

# etcd's default --max-txn-ops (kept for callers of the one-transaction era)
MAX_TXN_OPS = Limits().max_ops
# the kinds a manifest defines (the diff is over these keys only)
MANIFEST_KINDS = frozenset({Kind.FEDERATION, Kind.CLUSTER, Kind.SERVICE})
DETAIL_LINES = 8  # value lines shown per changed item


class ConcurrentChange(Exception):
    """The config keys changed between the read and the write; nothing was written."""

    def __init__(self, revision: int) -> None:
        super().__init__(
            f"concurrent change: etcd moved from revision {revision}; "
            "nothing was written; run apply again"
        )
        self.revision = revision


class ApplyRefused(Exception):
    """The apply would overwrite something it should not; ``--force`` overrides."""


class ApplyInterrupted(Exception):
    """A multi-transaction apply stopped midway; the barrier stays, gateways keep the old
    config."""


@dataclass(frozen=True, slots=True)
class ConfigState:
    """The config keys at one revision."""

    revision: int
    kvs: Mapping[str, KV]  # the manifest's keys: federation, clusters/, services/
    generation: KV | None = None
    applying: KV | None = None

    @property
    def barrier(self) -> Barrier | None:
        return Barrier.from_kv(self.applying) if self.applying is not None else None


@dataclass(frozen=True, slots=True)
class Change:
    op: ChangeOp
    kind: str  # federation | cluster | service
    name: str
    key: str
    fields: tuple[str, ...] = ()  # with op "change": the top-level fields that differ
    values: tuple[FieldChange, ...] = ()  # with op "change": each leaf, old -> new

    def line(self) -> str:
        what = f"{self.kind} {self.name}"
        if self.op == "add":
            return f"+ {what}"
        if self.op == "change":
            return f"~ {what}: {', '.join(self.fields)}" if self.fields else f"~ {what}"
        if self.op == "remove":
            return f"- {what}"
        return f"  {what}: not in manifest (kept; --prune removes)"

    def detail_lines(self, limit: int = DETAIL_LINES) -> list[str]:
        """``    path: old -> new`` for a change, at most ``limit`` of them."""
        lines = [f"    {v.line()}" for v in self.values[:limit]]
        if len(self.values) > limit:
            lines.append(f"    … and {len(self.values) - limit} more")
        return lines


@dataclass(frozen=True, slots=True)
class Plan:
    revision: int  # the revision the config was read at
    changes: tuple[Change, ...]
    puts: tuple[Put, ...]
    deletes: tuple[Delete, ...]
    guards: tuple[Guard, ...]  # every guard, the per-key ones included
    base_guards: tuple[Guard, ...] = ()  # the guards that always fit (ranges, generation)
    generation: int = 1  # the generation this apply writes
    generation_key: str = ""
    applying_key: str = ""
    takeover: Barrier | None = None  # a stale barrier this apply replaces

    @property
    def empty(self) -> bool:
        return not self.puts and not self.deletes

    @property
    def operations(self) -> int:
        return len(self.puts) + len(self.deletes)

    def count(self, op: ChangeOp) -> int:
        return sum(1 for c in self.changes if c.op == op)


@dataclass(frozen=True, slots=True)
class Written:
    revision: int
    transactions: int


_KIND_NAMES = {Kind.FEDERATION: "federation", Kind.CLUSTER: "cluster", Kind.SERVICE: "service"}


def desired_items(federation: Federation, layout: KeyLayout) -> dict[str, bytes]:
    """Every config key the manifest defines, with its value."""
    head: dict[str, object] = {"name": federation.name}
    if federation.zones:  # absent when empty: the key stays as older versions wrote it
        head["zones"] = list(federation.zones)
    items = {layout.federation(): codec.encode(head)}
    for c in federation.clusters:
        items[layout.cluster(c.name)] = codec.encode(c)
    for s in federation.services:
        items[layout.service(s.name)] = codec.encode(s)
    return items


async def read_config(client: EtcdClient, layout: KeyLayout) -> ConfigState:
    """The config keys at one revision: ``clusters/`` first (its answer's revision R), then
    ``services/`` and the single keys at R, so runtime keys (endpoints, health, gateways:
    most of the prefix at scale) are never read. A compaction of R meanwhile: read again."""
    for attempt in range(3):
        try:
            return await _read_config_once(client, layout)
        except EtcdCompacted:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


async def _read_config_once(client: EtcdClient, layout: KeyLayout) -> ConfigState:
    revision, kvs = await client.get_prefix(layout.folder(Kind.CLUSTER))
    for folder in (
        layout.folder(Kind.SERVICE),
        layout.federation(),
        layout.generation(),
        layout.applying(),
    ):
        kvs += (await client.get_prefix(folder, revision=revision))[1]
    config: dict[str, KV] = {}
    generation = applying = None
    for kv in kvs:
        parsed = layout.parse(kv.key)
        if parsed is None:
            continue
        if parsed.kind in MANIFEST_KINDS:
            config[kv.key] = kv
        elif parsed.kind is Kind.GENERATION:
            generation = kv
        elif parsed.kind is Kind.APPLYING:
            applying = kv
    return ConfigState(revision=revision, kvs=config, generation=generation, applying=applying)


def _plain(data: bytes) -> Any:
    try:
        return parse_json(data)  # a hostile value in etcd (deep, huge) is unreadable
    except ValueError:
        return None


def _changed(
    current: bytes, desired: bytes
) -> tuple[tuple[str, ...], tuple[FieldChange, ...]] | None:
    """None when equal; else the top-level fields that differ and each leaf's old -> new."""
    if current == desired:  # the codec is deterministic: the common case, without decoding
        return None
    old, new = _plain(current), _plain(desired)
    if old == new:
        return None
    if not isinstance(old, dict) or not isinstance(new, dict):
        return ("(unreadable value replaced)",), field_changes(old, new)
    fields = tuple(sorted(camel(k) for k in old.keys() | new.keys() if old.get(k) != new.get(k)))
    return fields, field_changes(old, new)


def _describe(layout: KeyLayout, key: str) -> tuple[str, str]:
    parsed = layout.parse(key)
    if parsed is None:  # pragma: no cover - config keys always parse
        return "key", key
    name = parsed.parts[0] if parsed.parts else ""
    return _KIND_NAMES.get(parsed.kind, str(parsed.kind)), name


def federation_name(state: ConfigState, layout: KeyLayout) -> str | None:
    """The federation name stored under the prefix (None when absent or unreadable)."""
    kv = state.kvs.get(layout.federation())
    data = _plain(kv.value) if kv is not None else None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def check_takeover(
    federation: Federation, state: ConfigState, layout: KeyLayout, *, force: bool
) -> Barrier | None:
    """Refuse (ApplyRefused) what needs ``--force``; the stale barrier to replace, if any."""
    stored = federation_name(state, layout)
    if stored is not None and stored != federation.name and not force:
        raise ApplyRefused(
            f"prefix {layout.prefix} holds federation {stored!r}, not {federation.name!r}; "
            "check --prefix, or pass --force to overwrite it"
        )
    barrier = state.barrier
    if barrier is None or force or barrier.left_by_dead_local_process():
        return barrier
    raise ApplyRefused(
        f"an apply is in progress or died midway ({barrier.describe()}); gateways keep "
        "the config from before it; pass --force to take its barrier over"
    )


def plan_apply(
    federation: Federation,
    state: ConfigState,
    layout: KeyLayout,
    *,
    prune: bool = False,
    takeover: Barrier | None = None,
) -> Plan:
    """What applying ``federation`` over ``state`` changes, and the guards of its write."""
    desired = desired_items(federation, layout)
    changes: list[Change] = []
    puts: list[Put] = []
    deletes: list[Delete] = []
    order = {layout.federation(): 0}
    clusters = layout.folder(Kind.CLUSTER)

    def sort_key(key: str) -> tuple[int, str]:
        return (order.get(key, 1 if key.startswith(clusters) else 2), key)

    for key in sorted(desired, key=sort_key):
        kind, name = _describe(layout, key)
        if key == layout.federation():
            name = federation.name
        value = desired[key]
        current = state.kvs.get(key)
        if current is None:
            changes.append(Change("add", kind, name, key))
            puts.append(Put(key, value))
            continue
        diff = _changed(current.value, value)
        if diff is not None:
            changes.append(Change("change", kind, name, key, diff[0], diff[1]))
            puts.append(Put(key, value))
    for key in sorted(set(state.kvs) - set(desired), key=sort_key):
        kind, name = _describe(layout, key)
        if prune:
            changes.append(Change("remove", kind, name, key))
            deletes.append(Delete(key))
        else:
            changes.append(Change("keep", kind, name, key))

    base: list[Guard] = []
    if layout.federation() not in state.kvs:
        base.append(Guard(layout.federation(), "create", "==", 0))
    for kind in (Kind.CLUSTER, Kind.SERVICE):
        base.append(Guard(layout.folder(kind), "mod", "<", state.revision + 1, prefix=True))
    if state.generation is not None:
        base.append(Guard(layout.generation(), "mod", "==", state.generation.mod_revision))
    else:
        base.append(Guard(layout.generation(), "create", "==", 0))
    if takeover is not None:
        base.append(Guard(layout.applying(), "mod", "==", takeover.mod_revision))
    else:
        base.append(Guard(layout.applying(), "version", "==", 0))
    per_key = [Guard(key, "mod", "==", kv.mod_revision) for key, kv in sorted(state.kvs.items())]
    previous = max(read_generation(state.generation), takeover.generation if takeover else 0)
    return Plan(
        revision=state.revision,
        changes=tuple(changes),
        puts=tuple(puts),
        deletes=tuple(deletes),
        guards=tuple(per_key + base),
        base_guards=tuple(base),
        generation=previous + 1,
        generation_key=layout.generation(),
        applying_key=layout.applying(),
        takeover=takeover,
    )


def _finish_ops(plan: Plan) -> list[Put | Delete]:
    """What the last transaction adds: the new generation, the barrier removed."""
    ops: list[Put | Delete] = [Put(plan.generation_key, generation_value(plan.generation))]
    if plan.takeover is not None:
        ops.append(Delete(plan.applying_key))
    return ops


def txn_needs(plan: Plan, flags: Limits) -> tuple[int, int]:
    """(operations or compares, bytes) worth probing etcd for, to write ``plan``.

    The per-key guards are worth a larger transaction only up to the flag's limit:
    beyond it the base guards do (see :func:`_guards_that_fit`).
    """
    ops = [*plan.puts, *plan.deletes, *_finish_ops(plan)]
    size = sum(op_bytes(op) for op in ops) + sum(guard_bytes(g) for g in plan.guards)
    guards = min(len(plan.guards), max(flags.max_ops, len(plan.base_guards)))
    return max(len(ops), guards), size


def _guards_that_fit(plan: Plan, limits: Limits) -> tuple[Guard, ...]:
    """Every guard when they fit in one transaction beside a barrier put; else the base ones
    (a config key deleted by hand meanwhile then goes unnoticed: documented)."""
    if fits(limits, plan.guards, [Put(plan.applying_key, b"x" * 256)]):
        return plan.guards
    return plan.base_guards


def _one_line_size_error(exc: EtcdError, limits: Limits) -> TxnTooLarge:
    return TxnTooLarge(
        f"etcd refused a transaction as too large ({str(exc).split(': ')[-1]}); "
        f"sized for {limits.describe()}: lower --max-txn-ops / --max-request-bytes"
    )


async def _txn(
    client: EtcdClient, guards: tuple[Guard, ...], ops: list[Put | Delete], limits: Limits
) -> tuple[bool, int]:
    try:
        return await client.txn(guards, ops)
    except EtcdError as exc:
        if too_large(exc):
            raise _one_line_size_error(exc, limits) from None
        raise


async def execute(
    client: EtcdClient,
    plan: Plan,
    limits: Limits | None = None,
    *,
    between: Callable[[int, int], Awaitable[None]] | None = None,
) -> Written:
    """Write the plan: one transaction when it fits, else behind the barrier.

    Raises ConcurrentChange when etcd moved since the read (nothing written),
    ApplyInterrupted when a multi-transaction write stops midway (the barrier stays).
    ``between(done, total)`` runs after each transaction but the last (a test seam).
    """
    limits = limits or Limits()
    body: list[Put | Delete] = [*plan.puts, *plan.deletes]
    finish = _finish_ops(plan)
    guards = _guards_that_fit(plan, limits)
    for one in (guards, plan.base_guards):  # one transaction, with every guard if it can
        if fits(limits, one, body + finish):
            ok, revision = await _txn(client, one, body + finish, limits)
            if not ok:
                raise ConcurrentChange(plan.revision)
            return Written(revision, 1)

    # the barrier protocol
    finish = [*finish[:1], Delete(plan.applying_key)]
    start = Put(plan.applying_key, barrier_value(plan.generation, len(body)))
    ok, barrier_revision = await _txn(client, guards, [start], limits)
    if not ok:
        raise ConcurrentChange(plan.revision)
    hold = (Guard(plan.applying_key, "mod", "==", barrier_revision),)
    chunks = chunk(
        body,
        limits,
        guard_cost=guard_bytes(hold[0]),
        last_reserve_ops=len(finish),
        last_reserve_bytes=sum(op_bytes(op) for op in finish),
    )
    total = len(chunks) + 1
    revision = barrier_revision
    for i, ops in enumerate(chunks, start=1):
        last = i == len(chunks)
        try:
            if between is not None:
                await between(i, total)
            ok, revision = await _txn(client, hold, ops + finish if last else ops, limits)
        except EtcdError as exc:
            raise ApplyInterrupted(
                f"apply stopped after {i} of {total} transactions ({exc}); the barrier "
                f"{plan.applying_key} stays, gateways keep the config from before it; "
                "run apply again (--force if it says so)"
            ) from None
        if not ok:
            raise ApplyInterrupted(
                f"apply stopped after {i} of {total} transactions: another apply took "
                f"the barrier {plan.applying_key} over"
            )
    return Written(revision, total)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    plan: Plan
    written: bool
    revision: int  # after the write (or the revision read, when nothing was written)
    transactions: int = 0
    limits: Limits | None = None
    notes: tuple[str, ...] = field(default=())


async def apply_federation(
    client: EtcdClient,
    layout: KeyLayout,
    federation: Federation,
    *,
    prune: bool = False,
    dry_run: bool = False,
    force: bool = False,
    limits: Limits | None = None,
    probe: bool = True,
    on_plan: Callable[[Plan], None] | None = None,
    before_write: Callable[[], Awaitable[None]] | None = None,
    between: Callable[[int, int], Awaitable[None]] | None = None,
) -> ApplyResult:
    """Read, diff, and (unless ``dry_run`` or nothing changed) write.

    ``limits`` are the flags' values; with ``probe`` etcd is asked for its own.
    ``on_plan`` sees the plan before anything is written (to print the diff);
    ``before_write`` runs between the read and the write (tests use it to race a change).
    """
    state = await read_config(client, layout)
    takeover = check_takeover(federation, state, layout, force=force)
    plan = plan_apply(federation, state, layout, prune=prune, takeover=takeover)
    notes: list[str] = []
    if takeover is not None:
        notes.append(f"taking over the barrier of an unfinished apply ({takeover.describe()})")
    if on_plan is not None:
        on_plan(plan)
    if dry_run or (plan.empty and takeover is None):
        return ApplyResult(plan, written=False, revision=state.revision, notes=tuple(notes))
    flags = limits or Limits()
    if probe:
        need_ops, need_bytes = txn_needs(plan, flags)
        flags = await probe_limits(
            client, layout.applying(), need_ops=need_ops, need_bytes=need_bytes, ceiling=flags
        )
    if before_write is not None:
        await before_write()
    written = await execute(client, plan, flags, between=between)
    return ApplyResult(
        plan,
        written=True,
        revision=written.revision,
        transactions=written.transactions,
        limits=flags,
        notes=tuple(notes),
    )
