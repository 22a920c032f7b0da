"""``view.observations``: every observer's values, kept per key and shared between views.

A health write changes one key's observations (one summary: one service of one
cluster), yet the view's ``observations`` is all of them (40,000 at 1,000 clusters).
Rebuilding that tuple on each write (sort 40,000 keys, chain 40,000 values) cost
~18 ms of CPU in one C call that holds the interpreter lock, so the event loop
waited behind an update applied in a worker thread. Nothing on the request path
reads it: the snapshot leaves it out, tests and tools read it whole.

So the view state keeps its health keys in an :class:`ObservationStore`: fixed
buckets of ``key -> observations``, copied on write. Publishing a view freezes the
store into an :class:`ObservationTable` (a tuple of the bucket references: O(buckets),
not O(keys)); a write after that copies only the bucket it touches (O(keys / buckets)),
so a reader holding an older view keeps its buckets unchanged. The table is an
immutable :class:`~collections.abc.Sequence` whose flat, key-ordered tuple is built on
its first read, by that reader, and kept.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import overload

from federation.model import Observation

Values = tuple[Observation, ...]

BUCKETS = 256  # 40,000 keys: ~160 per bucket; one write copies one bucket and 256 references


class ObservationTable(Sequence[Observation]):
    """The observations of one view, in key order (read-only; flattened on first read)."""

    __slots__ = ("_buckets", "_flat")

    def __init__(self, buckets: tuple[dict[str, Values], ...] = ()) -> None:
        self._buckets = buckets  # never written once a table holds them
        self._flat: Values | None = None

    def flat(self) -> Values:
        """Every observation as one tuple, in the order of their keys."""
        flat = self._flat
        if flat is None:
            items = sorted(itertools.chain.from_iterable(b.items() for b in self._buckets))
            flat = self._flat = tuple(itertools.chain.from_iterable(v for _, v in items))
        return flat

    def __len__(self) -> int:
        return len(self.flat())

    def __iter__(self) -> Iterator[Observation]:
        return iter(self.flat())

    @overload
    def __getitem__(self, index: int) -> Observation: ...
    @overload
    def __getitem__(self, index: slice) -> Values: ...
    def __getitem__(self, index: int | slice) -> Observation | Values:
        return self.flat()[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ObservationTable):
            return other is self or self.flat() == other.flat()
        if isinstance(other, tuple):
            return self.flat() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to a tuple, so not hashable

    def __repr__(self) -> str:
        return f"ObservationTable({self.flat()!r})"


class ObservationStore:
    """The view state's ``health key -> observations``, bucketed and copied on write."""

    __slots__ = ("_buckets", "_owned", "_table")

    def __init__(self) -> None:
        self._buckets: list[dict[str, Values]] = [{} for _ in range(BUCKETS)]
        self._owned: set[int] = set(range(BUCKETS))  # buckets no published table holds
        self._table: ObservationTable | None = None  # the last one, while nothing changed

    def _bucket(self, key: str) -> dict[str, Values]:
        return self._buckets[hash(key) % BUCKETS]

    def _writable(self, key: str) -> dict[str, Values]:
        i = hash(key) % BUCKETS
        if i in self._owned:
            return self._buckets[i]
        bucket = self._buckets[i] = dict(self._buckets[i])
        self._owned.add(i)
        self._table = None
        return bucket

    def __getitem__(self, key: str) -> Values:
        return self._bucket(key)[key]

    def __contains__(self, key: str) -> bool:
        return key in self._bucket(key)

    def get(self, key: str, default: Values = ()) -> Values:
        return self._bucket(key).get(key, default)

    def __setitem__(self, key: str, value: Values) -> None:
        self._writable(key)[key] = value
        self._table = None

    def pop(self, key: str, default: Values | None = None) -> Values | None:
        if key not in self._bucket(key):
            return default
        self._table = None
        return self._writable(key).pop(key)

    def freeze(self) -> ObservationTable:
        """The current observations as a table no later write changes."""
        table = self._table
        if table is None:
            table = self._table = ObservationTable(tuple(self._buckets))
            self._owned.clear()
        return table
