"""YAML text -> :class:`federation.model.Federation`, or every problem with its position."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from federation.manifest import checks, convert, schema
from federation.manifest.compose import gc_paused
from federation.manifest.errors import Issue, ManifestError
from federation.manifest.source import Document, Path, SourceError, format_path, read_yaml
from federation.manifest.values import show_value
from federation.model import Federation

MAX_BYTES = 16 * 1024 * 1024


def _model_at(
    loc: Sequence[str | int], root: type[BaseModel] = schema.ManifestDoc
) -> type[BaseModel] | None:
    """The wire model that validates the mapping at ``loc`` (for unknown-key hints)."""
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if not isinstance(part, str):
                return None
            field = next(
                (f for n, f in tp.model_fields.items() if (f.alias or n) == part),
                None,
            )
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) in (list, dict):
            tp = get_args(tp)[-1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is typing.Annotated:
            tp = get_args(tp)[0]
        elif origin is typing.Union or origin is types.UnionType:
            args = [a for a in get_args(tp) if a is not type(None)]
            tp = args[0]
        else:
            return tp


def _aliases(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _message(err: ErrorDetails, root: type[BaseModel] = schema.ManifestDoc) -> str:
    kind = err["type"]
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    value = err.get("input")
    loc = [p for p in err["loc"] if p != "[key]"]
    if kind == "fedgate":
        return str(ctx.get("message", err["msg"]))
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        name = str(loc[-1]) if loc else "?"
        model = _model_at(loc[:-1], root)
        if model is None:
            return f"unknown field {name!r}"
        allowed = _aliases(model)
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown field {name!r} ({hint}allowed: {', '.join(allowed)})"
    if kind in _TYPE_NAMES:
        if kind == "string_type" and "[key]" in err["loc"]:
            return f"expected a string key, got {show_value(value)}"
        return f"expected {_TYPE_NAMES[kind]}, got {show_value(value)}"
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected', '?')}, got {show_value(value)}"
    bounds = {
        "greater_than_equal": (">=", "ge"),
        "greater_than": (">", "gt"),
        "less_than_equal": ("<=", "le"),
        "less_than": ("<", "lt"),
    }
    if kind in bounds:
        op, key = bounds[kind]
        bound = ctx.get(key)
        shown = f"{bound:g}" if isinstance(bound, float) else str(bound)
        return f"must be {op} {shown}, got {show_value(value)}"
    if kind == "too_short":
        if ctx.get("min_length") == 1:
            return "must not be empty"
        return f"needs at least {ctx.get('min_length')} items"
    if kind == "string_too_short":
        return "must not be empty"
    if kind in ("finite_number",):
        return f"must be a finite number, got {show_value(value)}"
    msg = err["msg"].removeprefix("Value error, ")  # a validator's own ValueError
    return msg[:1].lower() + msg[1:]


def _issues_from(
    doc: Document, exc: ValidationError, root: type[BaseModel] = schema.ManifestDoc
) -> None:
    """Every validation error of ``root`` as an issue at its line and column in ``doc``
    (also used for gateway.yaml, whose root is ``federation.settings.GatewaySettings``)."""
    for err in exc.errors(include_url=False):
        loc: Path = tuple(p for p in err["loc"] if p != "[key]")
        kind = err["type"]
        key = kind == "extra_forbidden" or "[key]" in err["loc"]
        if kind == "missing":
            line, column = doc.mark(loc[:-1])
            doc.issues.append(
                Issue(line, column, format_path(loc), _message(err, root), doc.filename)
            )
        else:
            doc.add(loc, _message(err, root), key=key)


issues_from_validation = _issues_from


@dataclass(frozen=True, slots=True)
class Checked:
    """A valid manifest and what looks unintended in it (printed by ``fedgate validate``)."""

    federation: Federation
    warnings: tuple[Issue, ...] = ()


def parse(text: str, *, filename: str = "<manifest>") -> Federation:
    """Validate ``text`` and build the domain model; raise :class:`ManifestError` with every
    problem otherwise."""
    return check(text, filename=filename).federation


def check(text: str, *, filename: str = "<manifest>") -> Checked:
    """:func:`parse`, and keep the warnings."""
    with gc_paused():  # one large acyclic tree: the collector's passes cost more than it
        return _check(text, filename=filename)


def _check(text: str, *, filename: str) -> Checked:
    try:
        doc = read_yaml(text, filename=filename)
    except SourceError as exc:
        raise ManifestError([exc.issue]) from None
    if not isinstance(doc.data, dict):
        doc.add((), f"expected a mapping at the top level, got {show_value(doc.data)}")
        raise ManifestError(doc.issues)
    model: schema.ManifestDoc | None = None
    try:
        # top-level keys starting with "x-" are extension fields, a home for YAML anchors
        # (`x-defaults: &defaults {...}`); nothing reads them
        data = {k: v for k, v in doc.data.items() if not str(k).startswith("x-")}
        model = schema.ManifestDoc.model_validate(data)
    except ValidationError as exc:
        _issues_from(doc, exc)
    checks.check(doc)
    if doc.issues or model is None:
        raise ManifestError(doc.issues)
    return Checked(convert.federation(model), tuple(sorted(doc.warnings)))


def load(path: str | FsPath) -> Federation:
    """Read and validate the manifest at ``path``; :class:`ManifestError` on any problem."""
    return load_checked(path).federation


def load_checked(path: str | FsPath) -> Checked:
    """:func:`load`, and keep the warnings."""
    name = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ManifestError([Issue(0, 0, "", f"cannot read: {reason}", name)]) from None
    if len(raw) > MAX_BYTES:
        raise ManifestError([Issue(0, 0, "", f"larger than {MAX_BYTES} bytes", name)])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(
            [Issue(0, 0, "", "not a text file (expected UTF-8 YAML)", name)]
        ) from None
    return check(text, filename=name)
