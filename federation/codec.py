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
import math
import re
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any, TypeVar, get_args, get_origin

from federation import boundcheck, frozen, limits

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
    if isinstance(obj, Sequence) and not isinstance(obj, bytes | bytearray | memoryview):
        return [to_plain(v) for v in obj]  # view.observations (federation.observations)
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
    try:
        tp: Any = cls
        fast: T = _checked(_compiled(tp), _parse_fast(data))
        return fast
    except Exception:
        pass  # the reference path below refuses it, naming why (or accepts it)
    raw = _parse(data)
    result: T = _guarded(_decode_one, cls, raw, "")
    return result


def decode_list(cls: type[T], data: bytes | str) -> tuple[T, ...]:
    try:
        return _decode_list_fast(cls, data)
    except Exception:
        pass
    raw = _parse(data)
    if not isinstance(raw, list):
        raise CodecError("expected a JSON list")
    limit, what = limits.list_limit(cls)
    if len(raw) > limit:
        raise CodecError(f"{len(raw)} {what} in one key (at most {limit})")
    return tuple(_guarded(_decode_one, cls, item, f"[{i}]") for i, item in enumerate(raw))


# -- the fast path: plain json.loads, compiled decoder, compiled bounds. It accepts a
# subset of what the reference path (limits.parse_json, _from_plain, limits.check_model)
# accepts, with an equal result: the size is checked first; no model field is Any, so a
# value the compiled decoder takes is nested no deeper than the model (< MAX_DEPTH);
# NaN, Infinity and 1e999 can only reach a float field, where _float refuses them.


_SCAN: Any = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # json.loads's scanner


def _parse_fast(data: bytes | str) -> Any:
    """``json.loads(data)`` for strict UTF-8 (anything else: the reference path). A
    value with nothing around it (what fedgate writes) is scanned directly: the same
    scanner, without ``json.loads``'s encoding detection and whitespace passes."""
    if type(data) is not bytes or len(data) > limits.MAX_VALUE_BYTES:
        raise _Refused
    text = data.decode("utf-8")
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        return json.loads(text)  # leading whitespace, or not JSON (it raises)
    if end != len(text):
        return json.loads(text)  # trailing whitespace, or extra data (it raises)
    return value


def _checked(decoder: Decoder, raw: Any) -> Any:
    obj = decoder(raw)
    if hasattr(type(obj), "__dataclass_fields__"):
        boundcheck.check(obj)
    return obj


_CHUNKED = 64 * 1024  # a list value larger than this is parsed item by item
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's, as json.decoder's
_ITEM = json.JSONDecoder()


def _parse_list_in_items(data: bytes) -> list[Any]:
    """A JSON list parsed one item at a time (``raw_decode``): a worker thread decoding a
    2,000-observation health value lets the event loop take the interpreter lock between
    items, where one ``json.loads`` holds it for the whole value. It takes a subset of
    what ``json.loads`` takes (strict UTF-8), with the same result."""
    text = data.decode("utf-8")
    end = len(text)
    at = _WHITESPACE.match(text, 0).end()  # type: ignore[union-attr]
    if text[at : at + 1] != "[":
        raise _Refused
    at = _WHITESPACE.match(text, at + 1).end()  # type: ignore[union-attr]
    out: list[Any] = []
    if text[at : at + 1] == "]":
        at += 1
    else:
        while True:
            item, at = _ITEM.raw_decode(text, at)
            out.append(item)
            at = _WHITESPACE.match(text, at).end()  # type: ignore[union-attr]
            sep = text[at : at + 1]
            at = _WHITESPACE.match(text, at + 1).end()  # type: ignore[union-attr]
            if sep == "]":
                break
            if sep != ",":
                raise _Refused
    if _WHITESPACE.match(text, at).end() != end:  # type: ignore[union-attr]
        raise _Refused
    return out


def _decode_list_fast(cls: type[T], data: bytes | str) -> tuple[T, ...]:
    if type(data) is bytes and _CHUNKED < len(data) <= limits.MAX_VALUE_BYTES:
        raw: Any = _parse_list_in_items(data)
    else:
        raw = _parse_fast(data)
    tp: Any = cls
    items: tuple[T, ...] = _list_decoder(tp)(raw)
    return items


@cache
def _list_decoder(cls: type) -> Decoder:
    """A list of ``cls`` (at most its per-key limit), each item decoded and checked as
    :func:`_checked` does; the decoder and the checks looked up once, not per item."""
    limit = limits.list_limit(cls)[0]
    decoder = _compiled(cls)
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):

        def decode_values(raw: Any) -> Any:
            if type(raw) is not list or len(raw) > limit:
                raise _Refused
            return tuple([_checked(decoder, item) for item in raw])

        return decode_values
    check = boundcheck.checker(cls)  # a dataclass decoder returns a cls, nothing else

    def decode_objects(raw: Any) -> Any:
        if type(raw) is not list or len(raw) > limit:
            raise _Refused
        out = []
        for item in raw:
            obj = decoder(item)
            check(obj)
            out.append(obj)
        return tuple(out)

    return decode_objects


@cache
def _hints(cls: type) -> dict[str, Any]:
    import federation.model as model_module

    return typing.get_type_hints(cls, vars(model_module))


def from_plain(tp: Any, value: Any, path: str = "") -> Any:
    """JSON-compatible value -> model object of type ``tp``.

    A decoder compiled once per type (:func:`_compiled`) takes the common case; when it
    refuses a value, the generic walk (:func:`_from_plain`) decodes it again and raises
    the error naming the field path (or, if it accepts it, its result is returned: the
    compiled decoder never accepts what the generic walk refuses).
    """
    try:
        return _compiled(tp)(value)
    except Exception:
        return _from_plain(tp, value, path)


def _from_plain(tp: Any, value: Any, path: str = "") -> Any:
    """The generic, reference decoder: walks ``tp``'s annotations, names the failing path."""
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
                return _from_plain(arg, value, path)
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
                kwargs[name] = _from_plain(
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
                _from_plain(a, v, f"{path}[{i}]")
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        else:
            item_tp = args[0] if args else Any
        items = [_from_plain(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return frozenset(items) if (origin or tp) is frozenset else tuple(items)
    if origin in (Mapping, dict) or tp in (dict,) or origin is typing.Mapping:
        if not isinstance(value, dict):
            raise CodecError(f"{where}: expected an object")
        args = get_args(tp)
        val_tp = args[1] if len(args) == 2 else Any
        return types.MappingProxyType(
            {str(k): _from_plain(val_tp, v, f"{path}.{k}") for k, v in value.items()}
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


# ------------------------------------------------------------ compiled decoders
#
# One closure per type, built once: the annotations are read at compile time, not per
# value. A compiled decoder accepts a subset of what _from_plain accepts (exact JSON
# types) and returns an equal object; it raises anything on a value it does not take,
# and from_plain then asks _from_plain (which names the failing path). Short strings
# are interned: the names of services, clusters and gateways repeat in every value.

Decoder = typing.Callable[[Any], Any]
_INTERN_MAX = 64  # strings up to this length are interned (names; not free text)
_intern = sys.intern


class _Refused(Exception):
    """Raised by a compiled decoder: the generic walk will say why."""


def _refuse(value: Any) -> typing.NoReturn:
    raise _Refused


def _identity(value: Any) -> Any:
    return value


def _str(value: Any) -> str:
    if type(value) is not str:
        raise _Refused
    return _intern(value) if len(value) <= _INTERN_MAX else value


def _int(value: Any) -> int:
    if type(value) is not int:
        raise _Refused
    return value


def _float(value: Any) -> float:
    if type(value) is float:
        if not math.isfinite(value):  # NaN, Infinity, 1e999: the reference refuses them
            raise _Refused
        return value
    if type(value) is not int:
        raise _Refused
    return float(value)


def _bool(value: Any) -> bool:
    if value is True or value is False:
        return value
    raise _Refused


_PRIMITIVES: dict[Any, Decoder] = {
    Any: _identity,
    str: _str,
    int: _int,
    float: _float,
    bool: _bool,
}


@cache
def _compiled(tp: Any) -> Decoder:
    """The decoder of ``tp`` (see above); types it does not know take the generic walk."""
    if tp in _PRIMITIVES:
        return _PRIMITIVES[tp]
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        others = [a for a in args if a is not type(None)]
        if len(others) != 1:
            return _generic(tp)  # several candidates: the generic walk's order decides
        inner = _compiled(others[0])
        nullable = len(others) != len(args)

        def union(value: Any) -> Any:
            if value is None:
                if nullable:
                    return None
                raise _Refused
            return inner(value)

        return union
    if origin is typing.Literal:
        allowed = args

        def literal(value: Any) -> Any:
            if type(value) is not str or value not in allowed:
                raise _Refused
            return value

        return literal
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _dataclass(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        members = {m.value: m for m in tp}

        def member(value: Any) -> Any:
            if type(value) is not str and type(value) is not int:
                raise _Refused
            return members[value]

        return member
    if origin in (tuple, frozenset) or tp in (tuple, frozenset):
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return _generic(tp)  # fixed-length tuples: rare
        item = _compiled(args[0]) if args else _identity
        if (origin or tp) is frozenset:
            return lambda value: frozenset(_items(item, value))
        return lambda value: tuple(_items(item, value))
    if origin in (Mapping, dict) or tp in (dict,) or origin is typing.Mapping:
        val = _compiled(args[1]) if len(args) == 2 else _identity

        def mapping(value: Any) -> Any:
            if type(value) is not dict:
                raise _Refused
            return types.MappingProxyType({str(k): val(v) for k, v in value.items()})

        return mapping
    return _generic(tp)


def _items(item: Decoder, value: Any) -> list[Any]:
    if type(value) is not list:
        raise _Refused
    return [item(v) for v in value]


def _generic(tp: Any) -> Decoder:
    return lambda value: _from_plain(tp, value)


_INLINE = {  # field type -> the check and conversion written into the generated decoder
    str: (
        "if type(v) is not str: raise Refused",
        "v = intern(v) if len(v) <= INTERN_MAX else v",
    ),
    int: ("if type(v) is not int: raise Refused",),
    float: (
        "if type(v) is float:",
        "    if not isfinite(v): raise Refused",
        "elif type(v) is int: v = float(v)",
        "else: raise Refused",
    ),
    bool: ("if v is not True and v is not False: raise Refused",),
}


def _dataclass(tp: Any) -> Decoder:
    """A decoder written for ``tp`` (one function, fields inline): per value it costs a
    dict lookup and a type check per field, not a walk of the annotations. The object
    is built with positional arguments (a missing optional field: its default, as
    ``__init__`` would take it) by ``federation.frozen.builder``, or by keyword when a
    field is keyword-only."""
    hints = _hints(tp)
    env: dict[str, Any] = {
        "Refused": _Refused,
        "intern": _intern,
        "INTERN_MAX": _INTERN_MAX,
        "isfinite": math.isfinite,
        "M": object(),
        "tp": tp,
    }
    fields = dataclasses.fields(tp)
    positional = all(f.init and not f.kw_only for f in fields)
    env["names"] = frozenset(f.name for f in fields)
    body = [
        "def decode_dataclass(value):",
        "    if type(value) is not dict or not names.issuperset(value): raise Refused",
    ]
    if not positional:
        body.append("    kw = {}")
    for i, f in enumerate(fields):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        body.append(f"    v = value.get({f.name!r}, M)")
        body.append("    if v is M:")
        if required:
            body.append("        raise Refused")
        elif not positional:
            body.append("        pass")
        elif f.default is not dataclasses.MISSING:
            env[f"D{i}"] = f.default
            body.append(f"        a{i} = D{i}")
        else:
            env[f"F{i}"] = f.default_factory
            body.append(f"        a{i} = F{i}()")
        body.append("    else:")
        inline = _INLINE.get(hints[f.name])
        if inline is None:
            env[f"d{i}"] = _compiled(hints[f.name])
            inline = (f"v = d{i}(v)",)
        body.extend(f"        {line}" for line in inline)
        body.append(f"        a{i} = v" if positional else f"        kw[{f.name!r}] = v")
    if positional:  # every field given: the class's builder (federation.frozen)
        env["build"] = frozen.builder(tp)
        body.append(f"    return build({', '.join(f'a{i}' for i in range(len(fields)))})")
    else:
        body.append("    return tp(**kw)")
    exec("\n".join(body), env)  # our own source, built from the class's field names
    decoder: Decoder = env["decode_dataclass"]
    return decoder
