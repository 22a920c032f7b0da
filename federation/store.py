"""Registering a manifest in etcd: the diff, and one transaction guarded by what was read.

``fedgate apply`` owns the *config* keys of the layout (``federation``, ``clusters/``,
``services/``; see :mod:`federation.keys`). :func:`read_config` reads them in one
linearizable read at revision R; :func:`plan_apply` compares them with the manifest
(decoded values, so a re-encoding alone is not a change); :func:`execute` writes every
put and delete in ONE transaction whose guards are:

- every config key read still has the mod revision it had at R (not changed, not deleted);
- no key under ``clusters/`` or ``services/`` was modified or created after R
  (a range compare: ``mod_revision < R + 1``), and the federation key was not created;

so either the whole manifest lands, or nothing does and :class:`ConcurrentChange` says
etcd moved. Runtime keys (gateways, endpoints, health) are never touched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from federation import codec, limits
from federation.etcd import KV, Delete, EtcdClient, EtcdError, Guard, Put
from federation.keys import KeyLayout, Kind
from federation.model import Federation

ChangeOp = Literal["add", "change", "remove", "keep"]

# etcd's default --max-txn-ops: compares and operations are each limited to this
MAX_TXN_OPS = 128


class ConcurrentChange(Exception):
    """The config keys changed between the read and the write; nothing was written."""

    def __init__(self, revision: int) -> None:
        super().__init__(
            f"concurrent change: etcd moved from revision {revision}; "
            "nothing was written; run apply again"
        )
        self.revision = revision


@dataclass(frozen=True, slots=True)
class ConfigState:
    """The config keys at one revision."""

    revision: int
    kvs: Mapping[str, KV]


@dataclass(frozen=True, slots=True)
class Change:
    op: ChangeOp
    kind: str  # federation | cluster | service
    name: str
    key: str
    fields: tuple[str, ...] = ()  # with op "change": the top-level fields that differ

    def line(self) -> str:
        what = f"{self.kind} {self.name}"
        if self.op == "add":
            return f"+ {what}"
        if self.op == "change":
            return f"~ {what}: {', '.join(self.fields)}" if self.fields else f"~ {what}"
        if self.op == "remove":
            return f"- {what}"
        return f"  {what}: not in manifest (kept; --prune removes)"


@dataclass(frozen=True, slots=True)
class Plan:
    revision: int  # the revision the config was read at
    changes: tuple[Change, ...]
    puts: tuple[Put, ...]
    deletes: tuple[Delete, ...]
    guards: tuple[Guard, ...]

    @property
    def empty(self) -> bool:
        return not self.puts and not self.deletes

    def count(self, op: ChangeOp) -> int:
        return sum(1 for c in self.changes if c.op == op)


_KIND_NAMES = {Kind.FEDERATION: "federation", Kind.CLUSTER: "cluster", Kind.SERVICE: "service"}


def desired_items(federation: Federation, layout: KeyLayout) -> dict[str, bytes]:
    """Every config key the manifest defines, with its value."""
    items = {layout.federation(): codec.encode({"name": federation.name})}
    for c in federation.clusters:
        items[layout.cluster(c.name)] = codec.encode(c)
    for s in federation.services:
        items[layout.service(s.name)] = codec.encode(s)
    return items


async def read_config(client: EtcdClient, layout: KeyLayout) -> ConfigState:
    """The config keys, in one linearizable read of the whole prefix."""
    revision, kvs = await client.get_prefix(layout.prefix)
    config = {}
    for kv in kvs:
        parsed = layout.parse(kv.key)
        if parsed is not None and parsed.is_config:
            config[kv.key] = kv
    return ConfigState(revision=revision, kvs=config)


def _plain(data: bytes) -> Any:
    try:
        return limits.parse_json(data)  # a hostile value in etcd (deep, huge) is unreadable
    except ValueError:
        return None


def _changed_fields(current: bytes, desired: bytes) -> tuple[str, ...] | None:
    """None when equal; else the top-level fields that differ."""
    old, new = _plain(current), _plain(desired)
    if old == new:
        return None
    if not isinstance(old, dict) or not isinstance(new, dict):
        return ("(unreadable value replaced)",)
    return tuple(sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k)))


def _describe(layout: KeyLayout, key: str) -> tuple[str, str]:
    parsed = layout.parse(key)
    if parsed is None:  # pragma: no cover - config keys always parse
        return "key", key
    name = parsed.parts[0] if parsed.parts else ""
    return _KIND_NAMES.get(parsed.kind, str(parsed.kind)), name


def plan_apply(
    federation: Federation, state: ConfigState, layout: KeyLayout, *, prune: bool = False
) -> Plan:
    """What applying ``federation`` over ``state`` changes, and the guarded transaction."""
    desired = desired_items(federation, layout)
    changes: list[Change] = []
    puts: list[Put] = []
    deletes: list[Delete] = []
    order = {layout.federation(): 0}

    def sort_key(key: str) -> tuple[int, str]:
        return (order.get(key, 1 if key.startswith(layout.folder(Kind.CLUSTER)) else 2), key)

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
        fields = _changed_fields(current.value, value)
        if fields is not None:
            changes.append(Change("change", kind, name, key, fields))
            puts.append(Put(key, value))
    for key in sorted(set(state.kvs) - set(desired), key=sort_key):
        kind, name = _describe(layout, key)
        if prune:
            changes.append(Change("remove", kind, name, key))
            deletes.append(Delete(key))
        else:
            changes.append(Change("keep", kind, name, key))

    guards: list[Guard] = [
        Guard(key, "mod", "==", kv.mod_revision) for key, kv in sorted(state.kvs.items())
    ]
    if layout.federation() not in state.kvs:
        guards.append(Guard(layout.federation(), "create", "==", 0))
    for kind in (Kind.CLUSTER, Kind.SERVICE):
        guards.append(Guard(layout.folder(kind), "mod", "<", state.revision + 1, prefix=True))
    return Plan(
        revision=state.revision,
        changes=tuple(changes),
        puts=tuple(puts),
        deletes=tuple(deletes),
        guards=tuple(guards),
    )


async def execute(client: EtcdClient, plan: Plan) -> int:
    """Write the plan in one transaction: the new revision, or ConcurrentChange."""
    ops: list[Put | Delete] = [*plan.puts, *plan.deletes]
    if len(ops) > MAX_TXN_OPS or len(plan.guards) > MAX_TXN_OPS:
        raise EtcdError(
            f"the manifest needs {max(len(ops), len(plan.guards))} operations in one "
            f"transaction; etcd allows {MAX_TXN_OPS} by default (--max-txn-ops)"
        )
    ok, revision = await client.txn(plan.guards, ops)
    if not ok:
        raise ConcurrentChange(plan.revision)
    return revision


@dataclass(frozen=True, slots=True)
class ApplyResult:
    plan: Plan
    written: bool
    revision: int  # after the write (or the revision read, when nothing was written)


async def apply_federation(
    client: EtcdClient,
    layout: KeyLayout,
    federation: Federation,
    *,
    prune: bool = False,
    dry_run: bool = False,
    on_plan: Callable[[Plan], None] | None = None,
    before_write: Callable[[], Awaitable[None]] | None = None,
) -> ApplyResult:
    """Read, diff, and (unless ``dry_run`` or nothing changed) write in one transaction.

    ``on_plan`` sees the plan before anything is written (to print the diff);
    ``before_write`` runs between the read and the write (tests use it to race a change).
    """
    state = await read_config(client, layout)
    plan = plan_apply(federation, state, layout, prune=prune)
    if on_plan is not None:
        on_plan(plan)
    if dry_run or plan.empty:
        return ApplyResult(plan, written=False, revision=state.revision)
    if before_write is not None:
        await before_write()
    revision = await execute(client, plan)
    return ApplyResult(plan, written=True, revision=revision)
