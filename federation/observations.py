"""``view.observations``: every observer's values, kept per key and shared between views.

A health write changes one key's observations (one summary: one service of one
cluster), yet the view's ``observations`` is all of them (40,000 at 1,000 clusters).
Rebuilding that tuple on each write (sort 40,000 keys, chain 40,000 values) cost
~18 ms of CPU in one C call that holds the interpreter lock, so the event loop
waited behind an update applied in a worker thread. Nothing on the request path
reads it: the snapshot leaves it out, tests and tools read it whole.

So the view state keeps its ``health key -> observations`` as a plain dict and, beside
it, an :class:`ObservationStore` (a :class:`~federation.cowmap.CowMap`) that views hold:
publishing a view syncs the keys the update touched into the store and freezes it
(O(touched + buckets), not O(keys)); a later change copies only the bucket it touches,
so a reader holding an older view keeps its content. The view's ``observations`` is an
:class:`ObservationTable` over that frozen map: an immutable
:class:`~collections.abc.Sequence` whose flat, key-ordered tuple is built on its first
read, by that reader, and kept.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import overload

from federation.cowmap import CowMap, FrozenMap
from federation.model import Observation

Values = tuple[Observation, ...]


class ObservationTable(Sequence[Observation]):
    """The observations of one view, in key order (read-only; flattened on first read)."""

    __slots__ = ("_flat", "source")

    def __init__(self, source: FrozenMap[str, Values] | None = None) -> None:
        self.source = source  # key -> observations; never written once frozen
        self._flat: Values | None = None if source is not None else ()

    def flat(self) -> Values:
        """Every observation as one tuple, in the order of their keys."""
        flat = self._flat
        if flat is None:
            assert self.source is not None
            buckets = self.source.buckets()
            items = sorted(itertools.chain.from_iterable(b.items() for b in buckets))
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


class ObservationStore(CowMap[str, Values]):
    """The view state's ``health key -> observations``; :meth:`table` for a view."""

    __slots__ = ("_table",)

    def __init__(self) -> None:
        super().__init__()
        self._table = ObservationTable()

    def table(self, source: Mapping[str, Values], keys: Iterable[str]) -> ObservationTable:
        """The observations of ``source`` after a change of ``keys``, as a table no
        later write changes."""
        frozen = self.publish(source, keys)
        if self._table.source is not frozen:
            self._table = ObservationTable(frozen)
        return self._table
