"""A map that publishes read-only copies in proportion to what changed since the last.

The view state's runtime maps hold an entry per key or per (service, cluster) pair
(40,000 at 1,000 clusters) and one write changes one or a few. Publishing a new view
by ``dict(...)`` copied all of them: ~1 ms of one C call holding the interpreter lock
per health write (the update runs in a worker thread; the event loop waits).

:class:`CowMap` keeps its entries in :data:`BUCKETS` fixed buckets (by hash). The view
state keeps its own plain dicts (read and written at C speed per pair) and
:meth:`~CowMap.publish` brings the keys an update changed into the map. Its
:meth:`~CowMap.freeze` returns a :class:`FrozenMap` holding references to the
buckets (O(buckets)) and marks them shared; a later write copies the one bucket it
touches first (O(entries / buckets)), so a frozen map never changes. Reading a frozen
map costs one hash and two index steps more than a dict: it is for maps the request
path does not read per request (``view.health``, ``view.observations``), not for
``view.endpoints``.

Iteration follows the buckets, not the order of insertion.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Generic, TypeVar, overload

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
D = TypeVar("D")

BUCKETS = 256  # 40,000 entries: ~160 a bucket; a write after a freeze copies one


class _Bucketed(Generic[K, V]):
    """The reads of both maps: a key's bucket by its hash (defined once)."""

    __slots__ = ()
    _buckets: Sequence[dict[K, V]]

    def __getitem__(self, key: K) -> V:
        return self._buckets[hash(key) % BUCKETS][key]

    @overload
    def get(self, key: K, /) -> V | None: ...
    @overload
    def get(self, key: K, default: V | D, /) -> V | D: ...
    def get(self, key: K, default: object = None, /) -> object:
        return self._buckets[hash(key) % BUCKETS].get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets[hash(key) % BUCKETS]

    def __iter__(self) -> Iterator[K]:
        return itertools.chain.from_iterable(self._buckets)


class FrozenMap(_Bucketed[K, V], Mapping[K, V]):
    """A read-only map whose buckets no writer changes (made by :meth:`CowMap.freeze`)."""

    __slots__ = ("_buckets", "_len")
    _buckets: tuple[dict[K, V], ...]

    def __init__(self, buckets: tuple[dict[K, V], ...], length: int) -> None:
        self._buckets = buckets
        self._len = length

    def __len__(self) -> int:
        return self._len

    def buckets(self) -> tuple[dict[K, V], ...]:
        """The buckets themselves (read them, never write them)."""
        return self._buckets

    def __repr__(self) -> str:
        return f"FrozenMap({dict(self.items())!r})"


class CowMap(_Bucketed[K, V]):
    """A mutable map, bucketed, whose :meth:`freeze` shares every unchanged bucket."""

    __slots__ = ("_buckets", "_frozen", "_owned")

    def __init__(self) -> None:
        self._buckets: list[dict[K, V]] = [{} for _ in range(BUCKETS)]
        self._owned = bytearray(b"\x01" * BUCKETS)  # 1: no frozen map holds this bucket
        self._frozen: FrozenMap[K, V] | None = None  # the last one, while nothing changed

    def _copy(self, i: int) -> dict[K, V]:
        """Bucket ``i``, copied first when a frozen map holds it."""
        if self._owned[i]:
            return self._buckets[i]
        bucket = self._buckets[i] = dict(self._buckets[i])
        self._owned[i] = 1
        return bucket

    def __setitem__(self, key: K, value: V) -> None:  # per assessment: kept to one call
        i = hash(key) % BUCKETS
        (self._buckets[i] if self._owned[i] else self._copy(i))[key] = value
        self._frozen = None

    @overload
    def pop(self, key: K, /) -> V: ...
    @overload
    def pop(self, key: K, default: V | D, /) -> V | D: ...
    def pop(self, key: K, *default: object) -> object:
        i = hash(key) % BUCKETS
        if key not in self._buckets[i]:
            if default:
                return default[0]
            raise KeyError(key)
        self._frozen = None
        return self._copy(i).pop(key)

    def __len__(self) -> int:
        return sum(map(len, self._buckets))

    def sync(self, source: Mapping[K, V], keys: Iterable[K]) -> None:
        """Make these keys' entries what ``source`` holds (absent there: removed). One
        loop, no call per key: a cold build syncs every pair."""
        buckets, owned, copy = self._buckets, self._owned, self._copy
        changed = False
        for key in keys:
            i = hash(key) % BUCKETS
            bucket = buckets[i]
            if key in source:
                value = source[key]
                if bucket.get(key) is value:  # assessed again, the same: nothing to copy
                    continue
                (bucket if owned[i] else copy(i))[key] = value
            elif key in bucket:
                del (bucket if owned[i] else copy(i))[key]
            else:
                continue
            changed = True
        if changed:
            self._frozen = None

    def publish(self, source: Mapping[K, V], keys: Iterable[K]) -> FrozenMap[K, V]:
        """:meth:`sync` then :meth:`freeze`: the frozen map of ``source`` after a change
        of ``keys`` (every other entry as last published)."""
        self.sync(source, keys)
        return self.freeze()

    def freeze(self) -> FrozenMap[K, V]:
        """The current entries as a map no later write changes."""
        frozen = self._frozen
        if frozen is None:
            frozen = self._frozen = FrozenMap(tuple(self._buckets), len(self))
            self._owned[:] = bytes(BUCKETS)
        return frozen
