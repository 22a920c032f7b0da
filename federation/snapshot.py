"""The last-known-good routing view on disk.

After every successful update the watcher hands the view to a
:class:`SnapshotWriter`, which writes it (debounced: a burst of updates gives one
write) in a worker thread, off the event loop: JSON to a temporary file in the same
folder, ``fsync``, ``os.replace`` over the snapshot, ``fsync`` of the folder. A reader
sees the old file or the new one, never half of one, even after a crash.

A gateway that starts while etcd is unreachable serves :func:`load_snapshot`'s view
(``source="snapshot"``, ``stale=True``) until the watcher reaches etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import tempfile
import time
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

FORMAT = "fedgate-view/1"


class SnapshotError(ValueError):
    """A snapshot file that cannot be read; the message is one line."""


def view_to_plain(view: RoutingView, *, written_at: float | None = None) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "written_at": time.time() if written_at is None else written_at,
        "revision": view.revision,
        "config_revision": view.config_revision,
        "federation": view.federation,
        "clusters": [codec.to_plain(c) for c in view.clusters.values()],
        "services": [codec.to_plain(s) for s in view.services.values()],
        "endpoints": [codec.to_plain(e) for eps in view.endpoints.values() for e in eps],
        "gateways": [codec.to_plain(g) for g in view.gateways.values()],
        "observations": [codec.to_plain(o) for o in view.observations],
        "health": [codec.to_plain(h) for h in view.health.values()],
        "rejected": [codec.to_plain(r) for r in view.rejected],
        "zones": [codec.to_plain(z) for z in view.zones],
    }


def encode_view(view: RoutingView) -> bytes:
    return json.dumps(view_to_plain(view), separators=(",", ":"), sort_keys=True).encode()


def decode_view(data: bytes) -> RoutingView:
    """A snapshot's bytes -> view (``source="snapshot"``, ``stale=True``)."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise SnapshotError(f"not a {FORMAT} snapshot")
    try:
        clusters = [codec.from_plain(Cluster, c, "clusters") for c in raw["clusters"]]
        services = [codec.from_plain(Service, s, "services") for s in raw["services"]]
        endpoints: dict[tuple[str, str], list[Endpoint]] = {}
        for e in raw["endpoints"]:
            ep: Endpoint = codec.from_plain(Endpoint, e, "endpoints")
            endpoints.setdefault((ep.service, ep.cluster), []).append(ep)
        gateways = [codec.from_plain(GatewayRecord, g, "gateways") for g in raw["gateways"]]
        observations = [
            codec.from_plain(Observation, o, "observations") for o in raw["observations"]
        ]
        health = [codec.from_plain(ServiceHealth, h, "health") for h in raw["health"]]
        rejected = [codec.from_plain(Rejection, r, "rejected") for r in raw["rejected"]]
        revision, config_revision = int(raw["revision"]), int(raw["config_revision"])
        federation = str(raw["federation"])
        zones = [codec.from_plain(Zone, z, "zones") for z in raw.get("zones", [])]
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"bad snapshot: {str(exc).splitlines()[0]}") from None
    return RoutingView(
        revision=revision,
        config_revision=config_revision,
        federation=federation,
        clusters=MappingProxyType({c.name: c for c in clusters}),
        services=MappingProxyType({s.name: s for s in services}),
        endpoints=MappingProxyType({k: tuple(v) for k, v in endpoints.items()}),
        gateways=MappingProxyType({g.id: g for g in gateways}),
        observations=tuple(observations),
        health=MappingProxyType({(h.service, h.cluster): h for h in health}),
        rejected=tuple(rejected),
        source="snapshot",
        stale=True,
        zones=tuple(zones),
    )


def write_snapshot(path: str | os.PathLike[str], view: RoutingView) -> None:
    """Write ``view`` to ``path`` atomically (tmp file, fsync, rename, fsync folder)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = encode_view(view)
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
            await asyncio.to_thread(write_snapshot, self.path, view)
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
