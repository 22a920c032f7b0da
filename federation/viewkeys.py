"""Every key under the prefix, as the view state holds it: what a delta changes.

:class:`KeyTable` takes a delta (``{key: KV or None}``) in, drops what it already holds
(a replay after a reconnect) and says which keys changed, by kind. Once the view state
has decoded them, the bytes of health and endpoint values (most of the prefix's bytes)
are dropped (:meth:`KeyTable.slim`): a fingerprint recognises a replay of the same
value. Config values are kept (``fedgate apply`` diffs against them).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Mapping

from federation.etcd import KV
from federation.frozen import builder
from federation.keys import (
    HELD_KINDS,
    KeyLayout,
    Kind,
    ParsedKey,
    parsed_view_skips,
    view_skips,
)
from federation.view import fingerprint

_KV: Callable[[str, bytes, int, int, int], KV] = builder(KV)  # KV(...), at half the cost


@dataclasses.dataclass
class Changes:
    """The keys a delta changed: by kind, and those the layout does not know; each
    changed key parsed (once: the view state decodes it with this)."""

    by_kind: dict[Kind, list[str]] = dataclasses.field(default_factory=dict)
    unknown: list[str] = dataclasses.field(default_factory=list)
    parsed: dict[str, ParsedKey | None] = dataclasses.field(default_factory=dict)


class KeyTable:
    def __init__(self, layout: KeyLayout) -> None:
        self.layout = layout
        self.kvs: dict[str, KV] = {}
        self._fingerprints: dict[str, tuple[int, int]] = {}
        self.config_revision = 0  # highest mod revision of a config key taken in

    def take(self, delta: Mapping[str, KV | None]) -> Changes:
        """Take ``delta`` in (``None`` = deleted); the keys whose value changed."""
        out = Changes()
        prefix = self.layout.prefix
        cut = len(prefix)
        parse = self.layout.parse
        for key in sorted(delta):
            kv = delta[key]
            parsed = parse(key)
            if parsed is not None:
                if parsed_view_skips(parsed):
                    continue
            elif key.startswith(prefix) and view_skips(key[cut:]):
                continue
            old = self.kvs.get(key)
            if kv is None:
                if old is None:
                    continue
                del self.kvs[key]
                self._fingerprints.pop(key, None)
            else:
                if old is not None and self._same(old, kv):
                    continue
                self.kvs[key] = kv
            out.parsed[key] = parsed
            if parsed is None:
                out.unknown.append(key)
            else:
                out.by_kind.setdefault(parsed.kind, []).append(key)
                if parsed.kind in HELD_KINDS and kv is not None:
                    self.config_revision = max(self.config_revision, kv.mod_revision)
        return out

    def _same(self, old: KV, kv: KV) -> bool:
        """Whether ``kv`` is the value already held (a replay after a reconnect)."""
        if old.mod_revision != kv.mod_revision:
            return False
        if old.value or not kv.value:
            return old.value == kv.value
        return self._fingerprints.get(kv.key) == fingerprint(kv.value)

    def slim(self, *keys: Iterable[str]) -> None:
        """Drop the bytes of these (decoded) values, keeping their fingerprints."""
        for key in itertools.chain(*keys):
            kv = self.kvs.get(key)
            if kv is not None and kv.value:
                self._fingerprints[key] = fingerprint(kv.value)
                # built directly: dataclasses.replace costs ~3 us a key (0.15 s of a
                # 1,000-cluster cold build), KV(...) ~1.5 us
                self.kvs[key] = _KV(kv.key, b"", kv.mod_revision, kv.create_revision, kv.lease)
