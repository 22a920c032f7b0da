"""Bounds on every value read from etcd (or a snapshot): the manifest's rules, one source.

A value in etcd is as hostile as a manifest: anyone who could write the key chose it.
:func:`check_json` runs *before* the JSON is decoded (size, nesting depth: a
``[`` x 100,000 value must not reach the recursive decoder), :func:`parse_json` refuses
NaN and ±Infinity (``1e999`` included), and :func:`check_model` checks every field of a
decoded model object against the constraints the manifest schema
(``federation.manifest.schema``) declares for the field of the same name: ``ge``/``gt``/
``le``/``lt``, minimum lengths, durations (> 0, or >= 0 where the schema allows zero),
and the syntax checks (DNS labels, ports, host:port, URLs, route hosts, paths, limit
keys, retry conditions). The bounds are read from the schema, not copied: change a
bound there and etcd values follow.

Cross-field rules of the manifest (a health-check timeout shorter than its interval...)
are not repeated here; a value that passes the per-field bounds cannot make the
gateway misbehave (no NaN, no negative or zero timeout, no endpoint without a port).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from functools import cache, lru_cache
from itertools import accumulate
from typing import Any

import annotated_types
from pydantic import AfterValidator, BaseModel, BeforeValidator
from pydantic.fields import FieldInfo

MAX_VALUE_BYTES = 1 << 20  # one etcd value (etcd's own default request limit is 1.5 MiB)
MAX_DEPTH = 32  # JSON nesting; the deepest model object needs 5
MAX_ENDPOINTS_PER_KEY = 1000  # endpoints of one (service, cluster, source) key
MAX_ITEMS_PER_KEY = 10_000  # any other list value (observations of one gateway)

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN = frozenset(b"[{")


class LimitError(ValueError):
    """A value outside the bounds; the message is one line and names the field path."""


# ------------------------------------------------------------------------ raw JSON


def check_json(data: bytes | str) -> None:
    """Refuse a value too large or nested too deep, before anything decodes it."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > MAX_VALUE_BYTES:
        raise LimitError(f"value too large: {len(raw)} bytes (at most {MAX_VALUE_BYTES})")
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return  # cannot be nested deeper (the common case: no scan)
    # strings removed (brackets in them do not count), then only brackets kept: all in C
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if brackets.count(b"[") + brackets.count(b"{") <= MAX_DEPTH:
        return
    depth = max(accumulate(1 if c in _OPEN else -1 for c in brackets), default=0)
    if depth > MAX_DEPTH:
        raise LimitError(f"value nested too deep (more than {MAX_DEPTH} levels)")


def _no_constant(name: str) -> float:
    raise LimitError(f"not a finite number: {name}")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise LimitError(f"not a finite number: {text[:40]}")
    return value


def parse_json(data: bytes | str) -> Any:
    """``json.loads`` after :func:`check_json`, refusing NaN and ±Infinity.

    Raises :class:`LimitError` (a ``ValueError``) for every refused value, including
    invalid JSON and a ``RecursionError`` (which the depth check should already prevent).
    """
    check_json(data)
    try:
        return json.loads(data, parse_constant=_no_constant, parse_float=_finite)
    except LimitError:
        raise
    except RecursionError:
        raise LimitError(f"value nested too deep (more than {MAX_DEPTH} levels)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise LimitError(f"not valid JSON: {str(exc).splitlines()[0]}") from None


# ------------------------------------------------------------------ model objects


def _doc_classes() -> dict[type, type[BaseModel]]:
    from federation import model
    from federation.manifest import schema

    return {
        model.Cluster: schema.ClusterDoc,
        model.KubernetesDiscovery: schema.KubernetesDoc,
        model.Route: schema.RouteDoc,
        model.HealthCheck: schema.HealthCheckDoc,
        model.Failover: schema.FailoverDoc,
        model.Retries: schema.RetriesDoc,
        model.CircuitBreaker: schema.CircuitBreakerDoc,
        model.RateLimit: schema.RateLimitDoc,
        model.Timeouts: schema.TimeoutsDoc,
        model.Service: schema.ServiceDoc,
    }


@cache
def _duration_markers() -> dict[int, bool]:
    """id() of the schema's duration validators -> whether zero is allowed."""
    from federation.manifest import schema

    out: dict[int, bool] = {}
    for alias, zero in ((schema.Duration, False), (schema.DurationOrZero, True)):
        for m in getattr(alias, "__metadata__", ()):
            out[id(m)] = zero
    return out


def _fail(path: str, message: str) -> typing.NoReturn:
    raise LimitError(f"{path}: {message}")


def _check_number(meta: object, value: Any, path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if isinstance(value, float) and not math.isfinite(value):
        _fail(path, f"not a finite number: {value}")
    if isinstance(meta, annotated_types.Ge) and not value >= meta.ge:  # type: ignore[operator]
        _fail(path, f"must be >= {meta.ge}, got {value}")
    if isinstance(meta, annotated_types.Gt) and not value > meta.gt:  # type: ignore[operator]
        _fail(path, f"must be > {meta.gt}, got {value}")
    if isinstance(meta, annotated_types.Le) and not value <= meta.le:  # type: ignore[operator]
        _fail(path, f"must be <= {meta.le}, got {value}")
    if isinstance(meta, annotated_types.Lt) and not value < meta.lt:  # type: ignore[operator]
        _fail(path, f"must be < {meta.lt}, got {value}")


def _check_meta(metadata: typing.Iterable[object], value: Any, path: str) -> None:
    durations = _duration_markers()
    for meta in metadata:
        if id(meta) in durations:
            zero_ok = durations[id(meta)]
            ok = isinstance(value, float | int) and math.isfinite(value)
            if not ok or value < 0 or (value == 0 and not zero_ok):
                _fail(path, f"must be a {'' if zero_ok else 'positive '}duration, got {value}")
        elif isinstance(meta, AfterValidator | BeforeValidator):
            try:
                meta.func(value)  # type: ignore[call-arg]
            except Exception as exc:  # the schema's checks raise pydantic's own error type
                _fail(path, str(exc).splitlines()[0])
        elif isinstance(meta, annotated_types.MinLen):
            if isinstance(value, tuple | list | frozenset | str | Mapping) and (
                len(value) < meta.min_length
            ):
                _fail(path, f"needs at least {meta.min_length} item(s)")
        else:
            _check_number(meta, value, path)


def _check_annotated(annotation: Any, metadata: list[object], value: Any, path: str) -> None:
    _check_meta(metadata, value, path)
    if value is None:
        return
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        args = typing.get_args(annotation)
        _check_annotated(args[0], list(annotation.__metadata__), value, path)
    elif origin is typing.Union or origin is types.UnionType:
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                _check_annotated(arg, [], value, path)
                return
    elif origin is list and isinstance(value, tuple | list | frozenset):
        (item,) = typing.get_args(annotation)
        for i, v in enumerate(sorted(value) if isinstance(value, frozenset) else value):
            _check_annotated(item, [], v, f"{path}[{i}]")
    elif origin is dict and isinstance(value, Mapping):
        _, item = typing.get_args(annotation)
        for k, v in value.items():
            _check_annotated(item, [], v, f"{path}.{k}")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        check_model(value, path)


@cache
def _doc_fields(cls: type) -> tuple[tuple[str, FieldInfo], ...]:
    doc = _doc_classes().get(cls)
    if doc is None:
        return ()
    names = {f.name for f in dataclasses.fields(cls)}
    return tuple((n, fi) for n, fi in doc.model_fields.items() if n in names)


def _check_east_west(obj: Any) -> None:
    from federation.manifest import values

    if obj.east_west:
        values.check_url(obj.east_west)


def _check_access(obj: Any) -> None:
    from federation.manifest import values

    for sid in sorted(obj.spiffe_ids):
        values.check_spiffe_id(sid)
    if not obj.spiffe_ids and not obj.networks:
        raise ValueError("an allow list needs at least one entry")


@lru_cache(maxsize=1 << 16)
def _host_port(address: str) -> str:
    """``values.check_host_port``, remembered: discovery republishes the same addresses."""
    from federation.manifest import values

    return values.check_host_port(address)


def _check_endpoint(obj: Any) -> None:
    _host_port(obj.address)


def _check_observation(obj: Any) -> None:
    if not 0.0 <= obj.error_rate <= 1.0:
        raise ValueError(f"an error rate is 0..1, got {obj.error_rate}")
    if obj.latency_ms < 0 or obj.healthy < 0 or obj.total < 0:
        raise ValueError("counts and latency are >= 0")


# class name -> (the check of fields whose manifest form has another name or shape,
# the field its error names)
_EXTRA: dict[str, tuple[Callable[[Any], None], str]] = {
    "Cluster": (_check_east_west, "east_west"),
    "GatewayRecord": (_check_east_west, "east_west"),
    "Access": (_check_access, "spiffe_ids"),
    "Endpoint": (_check_endpoint, "address"),
    "Observation": (_check_observation, "error_rate"),
}


@cache
def _other_fields(cls: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Fields the schema does not cover: (floats, those that may hold a model object)."""
    from federation import model

    hints = typing.get_type_hints(cls, vars(model))
    covered = {name for name, _ in _doc_fields(cls)}
    floats: list[str] = []
    nested: list[str] = []
    for f in dataclasses.fields(cls):
        if f.name in covered:
            continue
        args = typing.get_args(hints[f.name]) or (hints[f.name],)
        if float in args:
            floats.append(f.name)
        if any(dataclasses.is_dataclass(a) for a in args):
            nested.append(f.name)
    return tuple(floats), tuple(nested)


def _check_extra(obj: Any, path: str) -> None:
    def at(name: str) -> str:
        return f"{path}.{name}" if path else name

    extra = _EXTRA.get(type(obj).__name__)
    if extra is not None:
        try:
            extra[0](obj)
        except ValueError as exc:
            raise LimitError(f"{at(extra[1])}: {exc}") from None
    cls: Any = type(obj)
    floats, nested = _other_fields(cls)
    for name in floats:
        value = getattr(obj, name)
        if isinstance(value, float) and not math.isfinite(value):
            _fail(at(name), f"not a finite number: {value}")
    for name in nested:
        _check_nested(getattr(obj, name), at(name))


def _check_nested(value: Any, path: str) -> None:
    if value is None:
        return
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        check_model(value, path)
    elif isinstance(value, tuple | list | frozenset):
        for i, item in enumerate(value):
            _check_nested(item, f"{path}[{i}]")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_nested(item, f"{path}.{key}")


def check_model(obj: Any, path: str = "") -> None:
    """Check a decoded model object (and every object in it) against the manifest's bounds.

    Raises :class:`LimitError` naming the first field out of bounds.
    """
    cls: type = type(obj)
    fields = _doc_fields(cls)
    for name, info in fields:
        where = f"{path}.{name}" if path else name
        _check_annotated(info.annotation, list(info.metadata), getattr(obj, name), where)
    _check_extra(obj, path)


def list_limit(cls: type) -> tuple[int, str]:
    """How many items of ``cls`` one etcd value may hold, and what to call them."""
    from federation.model import Endpoint

    if cls is Endpoint:
        return MAX_ENDPOINTS_PER_KEY, "endpoints"
    return MAX_ITEMS_PER_KEY, "items"
