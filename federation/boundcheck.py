"""``limits.check_model``, compiled once per class: the same bounds, read once.

:func:`federation.limits.check_model` walks a decoded object's schema annotations
(``typing.get_origin``, metadata lists...) for every value: at 1,000 clusters that walk
was half of a cold start. :func:`check` runs the same checks from a plan built once
per class (the schema's validators, bounds, durations and minimum lengths; the extra
per-class checks; finite floats; nested objects), in the same places, and raises on the
first failure without naming it: the caller then runs ``limits.check_model``, the
reference, which names the field (``federation.codec`` does). The plan is at least
as strict as the reference: it mirrors it branch by branch, and any exception in it
(a validator's, a ``sorted`` of mixed types) counts as a refusal.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

import annotated_types
from pydantic import AfterValidator, BeforeValidator

from federation import limits

Checker = Callable[[Any], None]


class Refused(Exception):
    """A value the plan refuses; ``limits.check_model`` says why."""


def check(obj: Any) -> None:
    """Raise (anything) when ``limits.check_model(obj)`` would; return otherwise."""
    cls: Any = type(obj)
    _plan(cls)(obj)


def checker(cls: type) -> Checker:
    """:func:`check` of an object whose class is ``cls``, the plan looked up once."""
    return _plan(cls)


def _is_model(value: Any) -> bool:
    # dataclasses.is_dataclass(value) and not isinstance(value, type), inlined
    return not isinstance(value, type) and hasattr(type(value), "__dataclass_fields__")


# exact types that are never a model object: a value of one needs no structural walk
_SCALARS = frozenset({str, int, float, bool, type(None)})
_BOUNDS = (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt)


def _nothing(value: Any) -> None:
    return None


@cache
def _plan(cls: type) -> Checker:
    """The checks of ``cls``, written as one function (fields inline, as the compiled
    decoders are): per field an attribute read, its validators, and the structural walk
    only for a value that may hold more (not None, not a plain scalar)."""
    env: dict[str, Any] = {"Refused": Refused, "isfinite": math.isfinite}
    env.update(SCALARS=_SCALARS, nested=_nested)
    body = ["def check_object(obj):"]
    for i, (name, info) in enumerate(limits._doc_fields(cls)):
        metas, structural, plain = _split(info.annotation, tuple(info.metadata))
        body.append(f"    v = obj.{name}")
        for j, meta in enumerate(metas):
            env[f"m{i}_{j}"] = meta
            body.append(f"    m{i}_{j}(v)")
        env[f"s{i}"] = structural
        if plain:  # nothing to walk in None or a scalar
            body.append(f"    if v is not None and type(v) not in SCALARS: s{i}(v)")
        else:
            body.append(f"    if v is not None: s{i}(v)")
    extra = limits._EXTRA.get(cls.__name__)
    if extra is not None:
        env["extra"] = extra[0]
        body.append("    extra(obj)")
    floats, nested = limits._other_fields(cls)
    for name in floats:
        body.append(f"    v = obj.{name}")
        body.append("    if isinstance(v, float) and not isfinite(v): raise Refused")
    for name in nested:
        body.append(f"    nested(obj.{name})")
    body.append("    return None")
    exec("\n".join(body), env)  # our own source, built from the class's field names
    check_object: Checker = env["check_object"]
    return check_object


def _nested(value: Any) -> None:
    if value is None:
        return
    if _is_model(value):
        check(value)
    elif isinstance(value, tuple | list | frozenset):
        for item in value:
            _nested(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            _nested(item)


def _meta(meta: object) -> Checker:
    durations = limits._duration_markers()
    if id(meta) in durations:
        zero_ok = durations[id(meta)]

        def duration(value: Any) -> None:
            ok = isinstance(value, float | int) and math.isfinite(value)
            if not ok or value < 0 or (value == 0 and not zero_ok):
                raise Refused

        return duration
    if isinstance(meta, AfterValidator | BeforeValidator):
        func: Checker = meta.func  # type: ignore[assignment]
        return _remembered(func)
    if isinstance(meta, annotated_types.MinLen):
        least = meta.min_length

        def min_len(value: Any) -> None:
            if isinstance(value, tuple | list | frozenset | str | Mapping) and len(value) < least:
                raise Refused

        return min_len
    if isinstance(meta, _BOUNDS):
        return lambda value: limits._check_number(meta, value, "")

    def finite(value: Any) -> None:  # _check_number with no bound: finite floats only
        if isinstance(value, float) and not math.isfinite(value):
            raise Refused

    return finite


# the schema's validators are pure functions of one value (syntax checks: names, hosts,
# paths, addresses, durations): a string one of them accepted once it accepts again.
# Names repeat in every value (a service lists 20 clusters; 40,000 per cold build).
_REMEMBER_MAX_LEN = 64  # longer strings are checked each time (names are shorter)
_REMEMBER_MAX = 1 << 13  # strings remembered per validator (then forgotten at once)


def _remembered(func: Checker) -> Checker:
    """``func``, skipped for a string it accepted before (anything else: called)."""
    passed: set[str] = set()

    def validator(value: Any) -> None:
        if type(value) is str and value in passed:
            return
        func(value)
        if type(value) is str and len(value) <= _REMEMBER_MAX_LEN:
            if len(passed) >= _REMEMBER_MAX:
                passed.clear()
            passed.add(value)

    return validator


def _annotated(annotation: Any, metadata: tuple[object, ...]) -> Checker:
    """``limits._check_annotated(annotation, metadata, value)`` as a closure of value."""
    metas, structural, _ = _split(annotation, metadata)
    if not metas:

        def bare(value: Any) -> None:
            if value is not None:
                structural(value)

        return bare

    def annotated(value: Any) -> None:
        for m in metas:
            m(value)
        if value is not None:
            structural(value)

    return annotated


def _split(
    annotation: Any, metadata: tuple[object, ...]
) -> tuple[tuple[Checker, ...], Checker, bool]:
    """The parts of :func:`_annotated`: the metadata's checks (on every value), the
    structural check (on a value that is not None), and whether that one is *plain*:
    it does nothing to a scalar (an ``Annotated`` or union annotation is not: its inner
    metadata checks scalars too)."""
    metas = tuple(_meta(m) for m in metadata)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return metas, _annotated(args[0], tuple(annotation.__metadata__)), False
    if origin is typing.Union or origin is types.UnionType:
        first = next((a for a in args if a is not type(None)), None)
        return metas, (_annotated(first, ()) if first is not None else _nothing), False
    items = _annotated(args[0], ()) if origin is list else None
    values = _annotated(args[1], ()) if origin is dict else None

    def structural(value: Any) -> None:
        if type(value) in _SCALARS:
            return
        if items is not None and isinstance(value, tuple | list | frozenset):
            for item in sorted(value) if isinstance(value, frozenset) else value:
                items(item)
        elif values is not None and isinstance(value, Mapping):
            for item in value.values():
                values(item)
        elif _is_model(value):
            check(value)

    return metas, structural, True
