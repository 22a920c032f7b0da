"""The snapshot written by another process, fed only what changed.

The watcher hands every new view to :meth:`SnapshotWriter.schedule` with the keys of
its update. After ``debounce`` seconds (a burst gives one hand-over) the writer finds
what changed in the snapshot's part of the view since the copy the writer process
holds (:mod:`federation.snapshot_delta`: by the update's keys and by identity, so a
health write costs nothing), encodes those items only, and sends their lines through a
pipe to a long-lived child, ``python -m federation.snapshot_child``, which keeps its
own copy and writes the file coalesced (at most once per ``min_interval``), atomically
and with its digest (:mod:`federation.snapshot_file`).

What the event loop pays per update is the keys' prefix test; per hand-over, the
encoding of what changed, in slices of at most ``SLICE`` seconds with the loop served
between them. Nothing holds the interpreter lock against the loop: no worker thread, no
collection of a whole view's lines. A whole view is sent only to a new child (at start
and after a restart) or after a full reload, in the same slices, paced (``WHOLE_PAUSE``).

The child never blocks nor crashes the gateway: the pipe is written without waiting,
a child that stops reading for ``DRAIN_TIMEOUT`` or lets ``MAX_BUFFER`` bytes pile up is
killed, and a child that exits is started again after the project's jittered
backoff (:func:`federation.backoff.backoff_delay`), then sent the whole view.
:meth:`close` (the watcher's end) hands over the last state and has it written before
the child is told to stop; with no child to do it, the file is written in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pickle
import random
import secrets
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import federation
from federation import codec
from federation.backoff import backoff_delay
from federation.keys import KeyLayout
from federation.logging import get_logger
from federation.model import RoutingView, Service
from federation.snapshot import facts, line, write_snapshot
from federation.snapshot_child import FRAME
from federation.snapshot_delta import Touched, changes
from federation.snapshot_file import dumps

log = get_logger(__name__)

SLICE = 0.0005  # the longest stretch of encoding between two turns of the event loop (s)
# a whole view (to a new child, after a full reload) is not urgent: after each slice the
# loop idles this long, so an update applied in a worker thread meanwhile gets the lock
WHOLE_PAUSE = 0.002
MAX_BUFFER = 64 << 20  # bytes waiting for a child that does not read: it is stuck
DRAIN_TIMEOUT = 30.0  # seconds a child may take to read a whole view
FLUSH_TIMEOUT = 10.0  # seconds to wait for the child's write at flush / close
RESTART_INITIAL, RESTART_MAX = 0.1, 10.0  # the backoff between two starts (s)
# the folder holding the ``federation`` package, for the child's imports
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(federation.__file__)))
_MULTI = frozenset({"endpoint", "rejected", "zone"})  # blocks of several items
_LONG = 64  # a service of more routes is encoded route by route


class _Gone(Exception):
    """The child cannot take more (exited, its pipe broken, or stuck)."""


def snapshot_part(view: RoutingView) -> RoutingView:
    """The view without the runtime health (most of the bytes at scale, 23 MB of 25 at
    100 clusters, and stale by the time a snapshot is read: a gateway started from one
    takes its own cluster's health from its probes at once; remote clusters are
    ``unknown``, usable, until etcd answers)."""
    return dataclasses.replace(view, observations=(), health=MappingProxyType({}))


def _pieces(tag: str, value: object) -> Iterator[bytes]:
    """One block's bytes, in pieces that are each cheap to encode (the hand-over checks
    the clock between two): an item's line, or a large service's line route by route
    (a service of 10,000 routes is 0.27 s of encoding in one go)."""
    if tag in _MULTI:
        assert isinstance(value, tuple)
        for i, item in enumerate(value):
            yield (b"\n" if i else b"") + line(tag, item)
    elif isinstance(value, Service) and len(value.routes) > _LONG:
        plain = codec.to_plain(dataclasses.replace(value, routes=()))
        mark = f"routes-{secrets.token_hex(8)}"
        plain["routes"] = mark
        head, found, tail = dumps([tag, plain]).partition(f'"{mark}"'.encode())
        assert found and mark.encode() not in tail
        yield head + b"["
        for i, route in enumerate(value.routes):
            yield (b"," if i else b"") + dumps(codec.to_plain(route))
        yield b"]" + tail
    else:
        yield line(tag, value)


@dataclasses.dataclass
class _Child:
    """A writer process and the two ends of its pipes on the event loop."""

    proc: subprocess.Popen[bytes]
    stdin: asyncio.StreamWriter
    stdout: asyncio.StreamReader
    gone: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    wrote: bool = False  # it wrote a file (a healthy child: the backoff starts over)
    error: str = ""  # the last line it printed that is not an answer (a traceback's)
    flushes: dict[int, asyncio.Future[bool]] = dataclasses.field(default_factory=dict)
    reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, args: list[str], env: dict[str, str]) -> _Child:
        """Started from a worker thread: ``subprocess`` uses ``vfork`` there, where
        uvloop's spawn forks the whole process on the loop (52-59 ms of loop block from
        a 450 MB process, against under 1 ms)."""
        proc = await asyncio.to_thread(
            subprocess.Popen, args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=env, bufsize=0,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        loop = asyncio.get_running_loop()
        try:
            stdout = asyncio.StreamReader(loop=loop)
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdout), proc.stdout)
            transport, protocol = await loop.connect_write_pipe(
                lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=loop)), proc.stdin
            )
        except BaseException:
            proc.kill()
            await asyncio.to_thread(proc.wait)
            raise
        return cls(proc, asyncio.StreamWriter(transport, protocol, None, loop), stdout)

    def send(self, message: tuple[Any, ...]) -> None:
        if self.gone.is_set() or self.stdin.is_closing():
            raise _Gone("the writer process is gone")
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self.stdin.write(FRAME.pack(len(data)) + data)
        if self.stdin.transport.get_write_buffer_size() > MAX_BUFFER:
            raise _Gone("the writer process does not read its pipe")

    async def drained(self) -> None:
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT):
                await self.stdin.drain()
        except (TimeoutError, ConnectionError) as exc:
            raise _Gone(f"the writer process does not read its pipe: {exc!r}") from None

    async def stop(self, timeout: float) -> None:
        """End of its stdin: it writes what it holds and exits (killed after ``timeout``)."""
        if not self.stdin.is_closing():
            self.stdin.close()
        try:
            async with asyncio.timeout(timeout):
                await self.gone.wait()  # its stdout's end
            await asyncio.to_thread(self.proc.wait, timeout)
        except (TimeoutError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await asyncio.to_thread(self.proc.wait)
        if self.reader is not None:
            with contextlib.suppress(Exception):
                await self.reader


class SnapshotWriter:
    """Keeps the snapshot at ``path`` current through a writer process (see above)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        layout: KeyLayout | None = None,
        debounce: float = 0.5,
        min_interval: float = 10.0,
        flush_timeout: float = FLUSH_TIMEOUT,
    ) -> None:
        self.path = Path(path)
        self._flush_timeout = flush_timeout
        self._layout = layout  # without it every hand-over compares the views whole
        self._debounce = debounce
        self._min_interval = min_interval  # the child writes at most this often
        self._latest: RoutingView | None = None  # the newest view given
        self._touched: Touched | None = Touched()  # keys since the child's copy; None: all
        self._sent: RoutingView | None = None  # the view the child's copy is
        self._wake = asyncio.Event()
        self._flush_asked = False
        self._task: asyncio.Task[None] | None = None
        self._child: _Child | None = None
        self._spawning = False  # a child is being started
        self._live = asyncio.Event()  # ... and is there
        self._seq = 0  # hand-overs (commits) and flush orders, numbered
        self._written: RoutingView | None = None  # the last view on disk (as far as known)
        self._committed: tuple[int, RoutingView | None] = (0, None)  # the last commit
        self._closing = False
        self._rng = random.Random()
        self.writes = 0  # files written (by the child, or by this process at close)
        self.restarts = 0  # children started after one exited
        self.handovers = 0
        self.blocks_sent = 0  # changed blocks encoded and sent (the loop's share)
        self.last_error: str | None = None

    @property
    def pid(self) -> int | None:
        """The writer process's id (None while there is none)."""
        child = self._child
        return child.proc.pid if child is not None and not child.gone.is_set() else None

    def start(self) -> None:
        """Start the writer process now (while the heap is small: it forks this process)."""
        if self._task is None and not self._closing:
            self._spawning = True
            self._task = asyncio.get_running_loop().create_task(
                self._supervise(), name="snapshot-writer"
            )

    def schedule(self, view: RoutingView, changed: Iterable[str] | None = None) -> None:
        """Remember ``view`` (``changed``: the keys its update wrote or deleted; None when
        unknown, a full reload); it is handed over within ``debounce`` seconds."""
        if self._closing:
            return
        self._latest = view
        if changed is None or self._layout is None:
            self._touched = None
        elif self._touched is not None:
            self._touched.add(self._layout, changed)
        self.start()
        self._wake.set()

    async def flush(self) -> None:
        """Have the latest view written now: by the child (waiting ``flush_timeout`` at
        most), or else by this process."""
        timeout = self._flush_timeout
        if self._latest is None or self._written is self._latest:
            return
        if self._child is None and self._spawning:  # starting: it will be there shortly
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._live.wait()
        child = self._child
        if child is not None and not child.gone.is_set():
            future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._flush_asked = True
            self._seq += 1
            child.flushes[self._seq] = future
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    if await asyncio.shield(future) and self._written is self._latest:
                        return
        if self._written is not self._latest:
            await self._write_here()

    async def close(self) -> None:
        """Write the last state, then stop the writer process."""
        if self._closing:
            return
        try:
            await self.flush()
        finally:  # even when cancelled: the process is told to stop (it writes what it has)
            self._closing = True
            task, self._task = self._task, None
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _write_here(self) -> None:
        view = self._latest
        if view is None:
            return
        try:
            await asyncio.to_thread(write_snapshot, self.path, snapshot_part(view))
        except OSError as exc:
            self._failed(str(exc))
            return
        self._written = view
        self.writes += 1
        self.last_error = None

    def _failed(self, error: str) -> None:
        self.last_error = error
        log.warning("snapshot.write_failed", path=str(self.path), error=error)

    # -- the writer process
    async def _supervise(self) -> None:
        attempt = 0
        while True:
            child = None
            try:
                try:
                    child = await self._spawn()
                finally:
                    self._spawning = False
                await self._feed(child)
            except (OSError, _Gone) as exc:
                error = str(exc)
            except Exception as exc:  # a bug here must not end the snapshots for good
                error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            else:  # pragma: no cover - _feed returns only when the child is gone
                error = ""
            finally:
                self._child = None
                self._live.clear()
                self._sent = None  # a new child holds nothing
                if child is not None:
                    for future in child.flushes.values():
                        if not future.done():
                            future.set_result(False)
                    await child.stop(timeout=self._flush_timeout)
            if child is not None and child.wrote:
                attempt = 0
            delay = backoff_delay(attempt, initial=RESTART_INITIAL, maximum=RESTART_MAX,
                                  rng=self._rng)  # fmt: skip
            attempt += 1
            code = child.proc.returncode if child is not None else None
            log.warning(
                "snapshot.writer_exited",
                returncode=code,
                error=(child.error if child is not None and child.error else error)[:300],
                restart_in=round(delay, 2),
            )
            await asyncio.sleep(delay)
            self.restarts += 1
            self._spawning = True

    async def _spawn(self) -> _Child:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
        args = [sys.executable, "-m", "federation.snapshot_child", str(self.path),
                repr(self._min_interval)]  # fmt: skip
        child = await _Child.start(args, env)
        child.reader = asyncio.get_running_loop().create_task(
            self._read(child), name="snapshot-writer-answers"
        )
        self._child = child
        self._live.set()
        if self._latest is not None:
            self._wake.set()  # a new child holds nothing: the whole view goes over
        return child

    async def _read(self, child: _Child) -> None:
        """The child's answers; its end (EOF) marks it gone."""
        try:
            while raw := await child.stdout.readline():
                text = raw.decode(errors="replace").strip()
                kind, _, rest = text.partition(" ")
                number = rest.split(" ", 1)[0]
                if kind == "W" and number.isdigit():
                    self._wrote(child, int(number))
                elif kind == "F" and number.isdigit():
                    future = child.flushes.pop(int(number), None)
                    if future is not None and not future.done():
                        future.set_result(True)
                elif kind == "E":
                    self._failed(rest)
                elif text:
                    child.error = text  # not an answer: a traceback's line, say
        except (ValueError, OSError) as exc:  # an overlong line, a read error: stop it
            child.error = str(exc)
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()
        finally:
            child.gone.set()
            self._wake.set()

    def _wrote(self, child: _Child, seq: int) -> None:
        child.wrote = True
        self.writes += 1
        self.last_error = None
        if seq == self._committed[0]:
            self._written = self._committed[1]

    async def _feed(self, child: _Child) -> None:
        """Hand every new view over to ``child`` (and its flush orders) until it is gone."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if child.gone.is_set():
                raise _Gone("the writer process exited")
            if not self._flush_asked and self._debounce > 0:
                await asyncio.sleep(self._debounce)
            await self._hand_over(child)
            if self._flush_asked:
                if self._latest is not self._sent:  # a newer view came during that one
                    await self._hand_over(child)
                self._flush_asked = False
                for seq in list(child.flushes):
                    child.send(("flush", seq))

    async def _hand_over(self, child: _Child) -> None:
        view, touched, sent = self._latest, self._touched, self._sent
        if view is None or view is sent:
            return
        self._touched = Touched()
        self._sent = None  # partial until the commit below
        pause = WHOLE_PAUSE if sent is None or touched is None else 0.0
        batch: list[tuple[str, Any, bytes | None]] = []
        until = time.perf_counter() + SLICE
        for tag, key, value in changes(sent, view, touched):
            parts: list[bytes] = []
            for piece in () if value is None else _pieces(tag, value):
                parts.append(piece)
                if time.perf_counter() >= until:  # the loop's turn
                    if batch:
                        child.send(("put", batch))
                        self.blocks_sent += len(batch)
                        batch = []
                    await child.drained()
                    await asyncio.sleep(pause)
                    until = time.perf_counter() + SLICE
            batch.append((tag, key, b"".join(parts) or None))
        if batch:
            child.send(("put", batch))
            self.blocks_sent += len(batch)
        self._seq += 1
        self._committed = (self._seq, view)
        child.send(("commit", self._seq, facts(view)))
        self._sent = view
        self.handovers += 1
