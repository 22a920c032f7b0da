"""The last-known-good routing view on disk.

After every successful update the watcher hands the view to a
:class:`SnapshotWriter`, which writes it (debounced: a burst of updates gives one
write) in a worker thread, off the event loop: to a temporary file in the same
folder, ``fsync``, ``os.replace`` over the snapshot, ``fsync`` of the folder. A reader
sees the old file or the new one, never half of one, even after a crash.

The format (``fedgate-view/2``) is a header line ``{"format", "sha256"}``, a line of
facts (revision, config revision, federation name), then one line per item
(``["service", {...}]``: the codec's plain form). The digest covers every line after
the header: a file changed or cut after it was written is refused whole. Items are
encoded one by one and each object's line is kept until the next write, so a write
after a change encodes what changed (the incremental view keeps the other objects),
and the thread lets the event loop have the interpreter lock between items.

A gateway that starts while etcd is unreachable serves :func:`load_snapshot`'s view
(``source="snapshot"``, ``stale=True``; loaded in a worker thread) until the watcher
reaches etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
import threading
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

log = get_logger(__name__)

FORMAT = "fedgate-view/2"

# the parts of a view, one item per line: (line tag, model class)
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


class SnapshotError(ValueError):
    """A snapshot file that cannot be read; the message is one line."""


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


class LineCache:
    """Encoded lines of the objects of the last snapshot, by identity.

    The incremental view keeps the objects of what did not change, so a snapshot after
    a change encodes only what changed (each line is kept with its object, so an id is
    never reused while cached).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()  # one encoding at a time (a cancelled write's thread)
        self._lines: dict[int, tuple[object, bytes]] = {}
        self._next: dict[int, tuple[object, bytes]] = {}
        self.encoded = 0  # lines encoded (not taken from the cache)

    def line(self, tag: str, obj: object) -> bytes:
        hit = self._lines.get(id(obj))
        if hit is None or hit[0] is not obj:
            hit = (obj, _dumps([tag, codec.to_plain(obj)]))
            self.encoded += 1
        self._next[id(obj)] = hit
        return hit[1]

    def done(self) -> None:
        """The snapshot is written: keep the lines of its objects only."""
        self._lines, self._next = self._next, {}


def _items(view: RoutingView) -> Iterator[tuple[str, object]]:
    yield from (("cluster", c) for c in view.clusters.values())
    yield from (("service", s) for s in view.services.values())
    yield from (("endpoint", e) for eps in view.endpoints.values() for e in eps)
    yield from (("gateway", g) for g in view.gateways.values())
    yield from (("observation", o) for o in view.observations)
    yield from (("health", h) for h in view.health.values())
    yield from (("rejected", r) for r in view.rejected)
    yield from (("zone", z) for z in view.zones)


def encode_view(
    view: RoutingView, *, written_at: float | None = None, cache: LineCache | None = None
) -> bytes:
    """The snapshot's bytes: a header line (format, SHA-256 of the rest), then the view's
    facts, then one line per item.

    Encoded item by item (a worker thread encoding it lets the event loop take the
    interpreter lock between items, which one ``json.dumps`` of the whole view does not).
    """
    lines = cache if cache is not None else LineCache()
    with lines.lock:
        body = _body(view, lines, written_at)
    head = _dumps({"format": FORMAT, "sha256": hashlib.sha256(body).hexdigest()})
    return head + b"\n" + body


def _body(view: RoutingView, lines: LineCache, written_at: float | None) -> bytes:
    facts = {
        "written_at": time.time() if written_at is None else written_at,
        "revision": view.revision,
        "config_revision": view.config_revision,
        "federation": view.federation,
    }
    parts = [_dumps(facts)]
    parts.extend(lines.line(tag, obj) for tag, obj in _items(view))
    parts.append(b"")
    body = b"\n".join(parts)
    lines.done()
    return body


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
        facts = json.loads(lines[0])
        for line in lines[1:]:
            if not line:
                continue
            tag, plain = json.loads(line)
            parts[tag].append(codec.from_plain(_PARTS[tag], plain, tag))
        revision, config_revision = int(facts["revision"]), int(facts["config_revision"])
        federation = str(facts["federation"])
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


def write_snapshot(
    path: str | os.PathLike[str], view: RoutingView, *, cache: LineCache | None = None
) -> None:
    """Write ``view`` to ``path`` atomically (tmp file, fsync, rename, fsync folder)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = encode_view(view, cache=cache)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


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


class SnapshotWriter:
    """Writes the latest view given to :meth:`schedule`, debounced, in a worker thread."""

    def __init__(
        self, path: str | os.PathLike[str], *, debounce: float = 0.5, min_interval: float = 10.0
    ) -> None:
        self.path = Path(path)
        self._debounce = debounce
        # under churn at most one write per min_interval: encoding a 1,000-cluster view
        # is CPU (in a thread, but it holds the GIL), and the newest view is all that counts
        self._min_interval = min_interval
        self._last_write = -1e9
        self._pending: RoutingView | None = None
        self._task: asyncio.Task[None] | None = None
        self._lines = LineCache()  # only what changed since the last write is encoded
        self.writes = 0
        self.last_error: str | None = None

    def schedule(self, view: RoutingView) -> None:
        """Remember ``view``; it is written within ``debounce`` seconds.

        The runtime health (observations and their aggregate) is left out: it is most of
        the bytes at scale (23 MB of 25 at 100 clusters), stale by the time a snapshot is
        read, and a gateway started from a snapshot takes its own cluster's health from its
        probes at once; remote clusters are ``unknown`` (usable) until etcd answers.
        """
        self._pending = dataclasses.replace(view, observations=(), health=MappingProxyType({}))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._flush_later(), name="snapshot-writer"
            )

    async def _flush_later(self) -> None:
        wait = max(self._debounce, self._last_write + self._min_interval - time.monotonic())
        await asyncio.sleep(wait)
        await self.flush()

    async def flush(self) -> None:
        """Write the pending view now (in a thread)."""
        view, self._pending = self._pending, None
        if view is None:
            return
        self._last_write = time.monotonic()
        try:
            await asyncio.to_thread(write_snapshot, self.path, view, cache=self._lines)
            self.writes += 1
            self.last_error = None
        except OSError as exc:
            self.last_error = str(exc)
            log.warning("snapshot.write_failed", path=str(self.path), error=str(exc))

    async def close(self) -> None:
        """Write what is pending and stop."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()
