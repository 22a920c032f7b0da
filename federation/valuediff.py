"""What differs between two decoded JSON values, as ``path: old -> new`` lines.

Used by ``fedgate apply`` to show values in its diff. Objects are compared key by key
and lists of the same length item by item (``routes[0].host``); anything else that
differs is one leaf. Values are printed as compact JSON, cut to a readable width;
field names are spelled as in the manifest (camelCase), not as etcd stores them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

VALUE_WIDTH = 60
_MISSING = object()


@dataclass(frozen=True, slots=True)
class FieldChange:
    path: str
    old: str  # compact JSON, truncated; "(none)" when absent
    new: str

    def line(self) -> str:
        return f"{self.path}: {self.old} -> {self.new}"


def show(value: Any, width: int = VALUE_WIDTH) -> str:
    """Compact JSON of ``value``, cut to ``width`` characters with an ellipsis."""
    if value is _MISSING:
        return "(none)"
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def camel(name: str) -> str:
    """``health_check`` -> ``healthCheck``: the stored name as the manifest spells it."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _walk(path: str, old: Any, new: Any, out: list[FieldChange]) -> None:
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys()):
            _walk(
                f"{path}.{camel(str(key))}" if path else camel(str(key)),
                old.get(key, _MISSING),
                new.get(key, _MISSING),
                out,
            )
        return
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            _walk(f"{path}[{i}]", a, b, out)
        return
    out.append(FieldChange(path or "(value)", show(old), show(new)))


def field_changes(old: Any, new: Any) -> tuple[FieldChange, ...]:
    """Every leaf that differs between ``old`` and ``new``, in key order."""
    out: list[FieldChange] = []
    _walk("", old, new, out)
    return tuple(out)
