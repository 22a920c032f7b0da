"""The apply barrier: the ``{prefix}applying`` key that hides a multi-transaction apply.

A manifest change too large for one etcd transaction is written in several
(:mod:`federation.store`). Transaction 0 puts ``applying``; every later transaction is
guarded by that key's mod revision; the last one puts ``generation`` and deletes
``applying``. Watchers hold config events while the barrier exists, so no gateway
sees half a manifest. Its value says who holds it::

    {"generation": 7, "by": "alice@ops-1 4242", "started": 1764390000, "operations": 3012}

A barrier left by an apply that died stays until the next apply takes it over: with
``--force``, or by itself when the barrier was left on this host by a process that no
longer exists.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from dataclasses import dataclass

from federation.etcd import KV


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return str(os.getuid())


def holder() -> str:
    """This process as a barrier's ``by``: ``user@host pid``."""
    return f"{_user()}@{socket.gethostname()} {os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


@dataclass(frozen=True, slots=True)
class Barrier:
    """An ``applying`` key as read from etcd."""

    generation: int
    by: str
    started: float
    operations: int
    mod_revision: int
    create_revision: int

    @classmethod
    def from_kv(cls, kv: KV) -> Barrier:
        """The barrier in ``kv``; an unreadable value is still a barrier (of unknown holder)."""
        try:
            data = json.loads(kv.value)
        except (ValueError, UnicodeDecodeError, RecursionError):
            data = None
        if not isinstance(data, dict):
            data = {}

        def number(name: str) -> float:
            value = data.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value) if value == value and abs(value) < 1e15 else 0.0
            return 0.0

        by = data.get("by")
        return cls(
            generation=int(number("generation")),
            by=by if isinstance(by, str) else "(unknown)",
            started=number("started"),
            operations=int(number("operations")),
            mod_revision=kv.mod_revision,
            create_revision=kv.create_revision,
        )

    def left_by_dead_local_process(self) -> bool:
        """Whether this barrier's holder ran on this host and has exited."""
        who, _, pid_text = self.by.rpartition(" ")
        host = who.rpartition("@")[2]
        if host != socket.gethostname() or not pid_text.isdigit():
            return False
        pid = int(pid_text)
        return pid != os.getpid() and not _pid_alive(pid)

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started))
        return (
            f"generation {self.generation} by {self.by}, started {when}, "
            f"{self.operations} operations, at etcd revision {self.create_revision}"
        )


def barrier_value(generation: int, operations: int) -> bytes:
    return json.dumps(
        {
            "generation": generation,
            "by": holder(),
            "started": int(time.time()),
            "operations": operations,
        },
        separators=(",", ":"),
    ).encode()


def generation_value(generation: int) -> bytes:
    return json.dumps(
        {"generation": generation, "applied": int(time.time())}, separators=(",", ":")
    ).encode()


def read_generation(kv: KV | None) -> int:
    """The generation number stored in a ``generation`` key (0 when absent or unreadable)."""
    if kv is None:
        return 0
    try:
        data = json.loads(kv.value)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return 0
    value = data.get("generation") if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
