"""The wire format of model objects in etcd and snapshots: plain JSON, field names as in code.

``encode(obj) -> bytes`` and ``decode(cls, data) -> obj`` work for every frozen
dataclass of ``federation.model`` (nested dataclasses, tuples, frozensets, mappings,
enums, IP networks, optionals). Decoding is strict: an unknown or missing field, or a
value of the wrong type, raises :class:`CodecError` with the field path.

Every value is treated as hostile (``federation.limits``): size and nesting depth are
checked before the JSON is parsed, NaN and Infinity are refused, lists are capped per
key, and every decoded object is checked against the manifest schema's bounds. Any
failure, whatever its cause, is a one-line :class:`CodecError`.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import json
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any, TypeVar, get_args, get_origin

from federation import limits

T = TypeVar("T")


class CodecError(ValueError):
    """A value that does not decode into the model; the message names the field path."""


@cache
def _field_names(tp: Any) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(tp))


def to_plain(obj: Any) -> Any:
    """Model object -> JSON-compatible value."""
    if obj is None or isinstance(obj, str | int | float):  # the leaves: most calls
        return obj.value if isinstance(obj, enum.Enum) else obj
    cls: Any = type(obj)
    if hasattr(cls, "__dataclass_fields__") and not isinstance(obj, type):
        return {name: to_plain(getattr(obj, name)) for name in _field_names(cls)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(obj)
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, frozenset | set):
        return sorted(to_plain(v) for v in obj)
    if isinstance(obj, tuple | list):
        return [to_plain(v) for v in obj]
    return obj


def encode(obj: Any) -> bytes:
    return json.dumps(to_plain(obj), separators=(",", ":"), sort_keys=True).encode()


def _parse(data: bytes | str) -> Any:
    try:
        return limits.parse_json(data)
    except ValueError as exc:
        raise CodecError(str(exc)) from None


def _guarded(fn: Any, *args: Any) -> Any:
    """Run a decoding step; any failure (a bug, a RecursionError...) is a CodecError."""
    try:
        return fn(*args)
    except CodecError:
        raise
    except limits.LimitError as exc:
        raise CodecError(str(exc)) from None
    except (RecursionError, MemoryError):
        raise CodecError("value too complex to decode") from None
    except Exception as exc:
        raise CodecError(f"cannot decode: {type(exc).__name__}: {exc}".splitlines()[0]) from None


def _decode_one(cls: Any, raw: Any, path: str) -> Any:
    obj = from_plain(cls, raw, path)
    if dataclasses.is_dataclass(obj):
        limits.check_model(obj, path)
    return obj


def decode(cls: type[T], data: bytes | str) -> T:
    raw = _parse(data)
    result: T = _guarded(_decode_one, cls, raw, "")
    return result


def decode_list(cls: type[T], data: bytes | str) -> tuple[T, ...]:
    raw = _parse(data)
    if not isinstance(raw, list):
        raise CodecError("expected a JSON list")
    limit, what = limits.list_limit(cls)
    if len(raw) > limit:
        raise CodecError(f"{len(raw)} {what} in one key (at most {limit})")
    return tuple(_guarded(_decode_one, cls, item, f"[{i}]") for i, item in enumerate(raw))


@cache
def _hints(cls: type) -> dict[str, Any]:
    import federation.model as model_module

    return typing.get_type_hints(cls, vars(model_module))


def from_plain(tp: Any, value: Any, path: str = "") -> Any:
    """JSON-compatible value -> model object of type ``tp``."""
    where = path or "(top)"
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return from_plain(arg, value, path)
            except CodecError as exc:
                errors.append(str(exc))
        raise CodecError(errors[0] if errors else f"{where}: unexpected null")
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise CodecError(f"{where}: expected one of {list(get_args(tp))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise CodecError(f"{where}: expected an object")
        hints = _hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp)}
        unknown = set(value) - set(fields)
        if unknown:
            raise CodecError(f"{where}: unknown field {sorted(unknown)[0]!r}")
        kwargs = {}
        for name, f in fields.items():
            if name in value:
                kwargs[name] = from_plain(
                    hints[name], value[name], f"{path}.{name}" if path else name
                )
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise CodecError(f"{where}: missing field {name!r}")
        try:
            return tp(**kwargs)
        except (TypeError, ValueError) as exc:
            raise CodecError(f"{where}: {exc}") from None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise CodecError(f"{where}: not a valid {tp.__name__}: {value!r}") from None
    if origin in (tuple, frozenset) or tp in (tuple, frozenset):
        if not isinstance(value, list):
            raise CodecError(f"{where}: expected a list")
        args = get_args(tp)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            item_tp = args[0]
        elif origin is tuple and args:
            if len(args) != len(value):
                raise CodecError(f"{where}: expected {len(args)} items")
            return tuple(
                from_plain(a, v, f"{path}[{i}]")
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        else:
            item_tp = args[0] if args else Any
        items = [from_plain(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return frozenset(items) if (origin or tp) is frozenset else tuple(items)
    if origin in (Mapping, dict) or tp in (dict,) or origin is typing.Mapping:
        if not isinstance(value, dict):
            raise CodecError(f"{where}: expected an object")
        args = get_args(tp)
        val_tp = args[1] if len(args) == 2 else Any
        return types.MappingProxyType(
            {str(k): from_plain(val_tp, v, f"{path}.{k}") for k, v in value.items()}
        )
    if tp in (ipaddress.IPv4Network, ipaddress.IPv6Network):
        try:
            return ipaddress.ip_network(value, strict=False)
        except (TypeError, ValueError):
            raise CodecError(f"{where}: not a network: {value!r}") from None
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CodecError(f"{where}: expected a number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise CodecError(f"{where}: expected an integer")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise CodecError(f"{where}: expected true or false")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise CodecError(f"{where}: expected a string")
        return value
    raise CodecError(f"{where}: cannot decode type {tp!r}")  # pragma: no cover
