"""The garbage collector and the view: a large, long-lived, acyclic heap.

A 1,000-cluster view is ~300,000 objects tracked by the cyclic collector. Python's
full (generation 2) collection walks all of them in one call that holds the
interpreter lock: 200-500 ms on the development VM, during which the event loop serves
nothing, and it runs again every time the heap grows by a quarter. The view's objects
are value objects that never form cycles (refcounting frees them), so:

- :func:`paused` turns the collector off while a whole prefix is decoded (every object
  made then survives: collections would only walk them, again and again);
- :func:`settle` then moves every object alive into the permanent generation
  (``gc.freeze``): later collections walk only what was made since (the changes), not
  the view. Objects frozen this way are still freed by refcounting when a later view
  drops them; only a reference cycle among them would never be collected. The full
  collection before the first freeze (the heap still small) leaves none; a later
  settle (the watcher's, after every megabyte of values decoded, at most every 10 s)
  collects the young generations first, so what it may keep is a cycle that died
  after reaching the oldest generation and before the next full collection: bounded
  per settle, and the gateway's own objects (requests, tasks) rarely are such.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator

# how long a thread may hold the interpreter lock while another waits for it (s)
LOOP_SWITCH_INTERVAL = 0.001


def prefer_the_loop() -> None:
    """Let the event loop take the interpreter lock back within 1 ms (Python's default is
    5 ms) while a worker thread decodes a large delta: the loop's longest wait for the
    lock is this interval. Process-wide, so called by the programs (``fedgate serve``,
    the bench's watcher), never by the library."""
    sys.setswitchinterval(LOOP_SWITCH_INTERVAL)


def collect_young() -> None:
    """A cheap collection of the young generations (before a freeze)."""
    gc.collect(1)


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No automatic collection inside (restored as it was on the way out)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def settle(*, young: bool = True) -> None:
    """Move every object alive now out of the collector's walks (``gc.freeze``).

    ``young``: collect the young generations first (after a build with the collector
    paused they hold the whole view: walking it would cost what the pause saved, and the
    build makes no cycles).
    """
    if young:
        collect_young()
    gc.freeze()
