"""The last-known-good routing view on disk: encoding a view, and reading it back.

The file (``fedgate-view/2``, :mod:`federation.snapshot_file`) is a header line
``{"format", "sha256"}``, a line of facts (revision, config revision, federation name),
then one line per item (``["service", {...}]``: the codec's plain form). The digest
covers every line after the header: a file changed or cut after it was written is
refused whole, and every line is then decoded into its model class (types checked).

A running gateway does not write it here: :class:`federation.snapshot_writer.SnapshotWriter`
hands what changed to a writer process, which keeps its own copy and writes it,
coalesced and atomically. :func:`write_snapshot` is the same file written in-process
(tests, and the last write when that process is gone at shutdown).

A gateway that starts while etcd is unreachable serves :func:`load_snapshot`'s view
(``source="snapshot"``, ``stale=True``; loaded in a worker thread) until the watcher
reaches etcd.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

from federation import codec
from federation.logging import get_logger
from federation.model import (
    Cluster,
    Endpoint,
    GatewayRecord,
    Observation,
    Rejection,
    RoutingView,
    Service,
    ServiceHealth,
    Zone,
)
from federation.snapshot_file import FORMAT, TAGS, assemble, dumps, write_atomic

log = get_logger(__name__)

# the parts of a view, one item per line: line tag -> model class
_PARTS: dict[str, type] = {
    "cluster": Cluster,
    "service": Service,
    "endpoint": Endpoint,
    "gateway": GatewayRecord,
    "observation": Observation,
    "health": ServiceHealth,
    "rejected": Rejection,
    "zone": Zone,
}
assert tuple(_PARTS) == TAGS


class SnapshotError(ValueError):
    """A snapshot file that cannot be read; the message is one line."""


def line(tag: str, obj: object) -> bytes:
    """One item's line: ``[tag, plain form]``."""
    return dumps([tag, codec.to_plain(obj)])


def facts(view: RoutingView) -> dict[str, Any]:
    """The view's facts line (the writer adds ``written_at``)."""
    return {
        "revision": view.revision,
        "config_revision": view.config_revision,
        "federation": view.federation,
    }


def _items(view: RoutingView) -> Iterator[tuple[str, object]]:
    yield from (("cluster", c) for c in view.clusters.values())
    yield from (("service", s) for s in view.services.values())
    yield from (("endpoint", e) for eps in view.endpoints.values() for e in eps)
    yield from (("gateway", g) for g in view.gateways.values())
    yield from (("observation", o) for o in view.observations)
    yield from (("health", h) for h in view.health.values())
    yield from (("rejected", r) for r in view.rejected)
    yield from (("zone", z) for z in view.zones)


def encode_view(view: RoutingView, *, written_at: float | None = None) -> bytes:
    """The snapshot's bytes of the whole view, encoded in this process."""
    head = facts(view)
    head["written_at"] = time.time() if written_at is None else written_at
    return assemble(head, (line(tag, obj) for tag, obj in _items(view)))


def decode_view(data: bytes) -> RoutingView:
    """A snapshot's bytes -> view (``source="snapshot"``, ``stale=True``).

    The digest in the header must match the rest (a file changed or cut after it was
    written is refused), then every line is decoded into its model class (types
    checked: the codec's compiled decoders).
    """
    head, _, body = data.partition(b"\n")
    try:
        header = json.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"not valid JSON: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise SnapshotError(f"not a {FORMAT} snapshot")
    if header.get("sha256") != hashlib.sha256(body).hexdigest():
        raise SnapshotError("digest mismatch: the file changed after it was written")
    lines = body.split(b"\n")
    parts: dict[str, list[Any]] = {tag: [] for tag in _PARTS}
    try:
        known = json.loads(lines[0])
        for raw in lines[1:]:
            if not raw:
                continue
            tag, plain = json.loads(raw)
            parts[tag].append(codec.from_plain(_PARTS[tag], plain, tag))
        revision, config_revision = int(known["revision"]), int(known["config_revision"])
        federation = str(known["federation"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"bad snapshot: {str(exc).splitlines()[0]}") from None
    endpoints: dict[tuple[str, str], list[Endpoint]] = {}
    for ep in parts["endpoint"]:
        endpoints.setdefault((ep.service, ep.cluster), []).append(ep)
    return RoutingView(
        revision=revision,
        config_revision=config_revision,
        federation=federation,
        clusters=MappingProxyType({c.name: c for c in parts["cluster"]}),
        services=MappingProxyType({s.name: s for s in parts["service"]}),
        endpoints=MappingProxyType({k: tuple(v) for k, v in endpoints.items()}),
        gateways=MappingProxyType({g.id: g for g in parts["gateway"]}),
        observations=tuple(parts["observation"]),
        health=MappingProxyType({(h.service, h.cluster): h for h in parts["health"]}),
        rejected=tuple(parts["rejected"]),
        source="snapshot",
        stale=True,
        zones=tuple(parts["zone"]),
    )


def write_snapshot(path: str | os.PathLike[str], view: RoutingView) -> None:
    """Write ``view`` to ``path`` atomically, in this process."""
    write_atomic(path, encode_view(view))


def load_snapshot(path: str | os.PathLike[str]) -> RoutingView | None:
    """The view saved at ``path``, or None when there is none (or it is unreadable)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("snapshot.unreadable", path=str(path), error=str(exc))
        return None
    try:
        return decode_view(data)
    except SnapshotError as exc:
        log.warning("snapshot.ignored", path=str(path), error=str(exc))
        return None
