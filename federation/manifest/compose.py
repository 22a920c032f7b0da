"""YAML text -> a tree of small nodes with positions, fast and without recursion.

libyaml (PyYAML's C parser) turns the text into events; this module composes them into
:class:`Scalar`, :class:`Seq` and :class:`Map` nodes with an explicit stack (a hostile
nesting depth is one error, never a deep recursion), resolves plain scalars by the
YAML 1.2 core schema itself (``on``, ``yes``, ``0755`` are not 1.1 booleans or octals:
libyaml's own resolver is YAML 1.1, so it is not used), and turns an alias into the
anchored node itself, so that expansion is the builder's business (and bounded there).

The cyclic garbage collector is paused while composing: the tree is acyclic and
allocated in one go, and the collector's generational passes otherwise cost ten times
the parse itself on a large manifest.
"""

from __future__ import annotations

import contextlib
import gc
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

TAG = "tag:yaml.org,2002:"
MAX_DEPTH = 64

# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1023-core-schema), with "_" digit
# separators and 0b as ruamel.yaml's 1.2 resolver accepted them
_NULL = re.compile(r"~|null|Null|NULL|")
_BOOL = re.compile(r"true|True|TRUE|false|False|FALSE")
_INT = re.compile(r"[-+]?(?:0b[01_]+|0o[0-7_]+|0x[0-9a-fA-F_]+|[0-9][0-9_]*)")
_FLOAT = re.compile(
    r"[-+]?(?:\.[0-9][0-9_]*|[0-9][0-9_]*\.[0-9_]*|[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)


class ComposeError(Exception):
    """Not one YAML document; ``line``/``column`` are 1-based (0 when unknown)."""

    def __init__(self, problem: str, line: int = 0, column: int = 0) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line
        self.column = column


@dataclass(slots=True, eq=False)
class Scalar:
    tag: str  # resolved: TAG + str|int|float|bool|null|merge, or an explicit tag
    value: str
    line: int
    column: int
    plain: bool


@dataclass(slots=True, eq=False)
class Seq:
    items: list[Node]
    line: int
    column: int


@dataclass(slots=True, eq=False)
class Map:
    pairs: list[tuple[Node, Node]]
    line: int
    column: int


Node = Scalar | Seq | Map


_MAYBE_NOT_STR = frozenset("0123456789+-.~<nNtTfF")


def resolve_plain(value: str) -> str:
    """The core-schema tag of a plain (unquoted, untagged) scalar."""
    if value and value[0] not in _MAYBE_NOT_STR:
        return TAG + "str"  # the common case, without a regex
    if value == "<<":
        return TAG + "merge"
    if _NULL.fullmatch(value):
        return TAG + "null"
    if _BOOL.fullmatch(value):
        return TAG + "bool"
    if _INT.fullmatch(value):
        return TAG + "int"
    if _FLOAT.fullmatch(value):
        return TAG + "float"
    return TAG + "str"


def _at(event: Any) -> tuple[int, int]:
    """The 1-based (line, column) where ``event`` starts."""
    mark = event.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)


def _scalar(event: Any) -> Scalar:
    plain = not event.style
    tag = event.tag
    if tag is None or tag == "!":
        tag = resolve_plain(event.value) if plain and tag is None else TAG + "str"
    return Scalar(tag, event.value, *_at(event), plain)


def _compose(text: str) -> Node | None:
    root: Node | None = None
    stack: list[Seq | Map] = []
    keys: list[Node | None] = []  # per open mapping: the key waiting for its value
    anchors: dict[str, Node] = {}
    documents = 0
    for event in yaml.parse(text, Loader=yaml.CSafeLoader):
        node: Node | None = None
        if isinstance(event, ScalarEvent):
            node = _scalar(event)
        elif isinstance(event, SequenceStartEvent | MappingStartEvent):
            if len(stack) >= MAX_DEPTH:
                raise ComposeError("nested too deeply")
            opened: Seq | Map = (
                Seq([], *_at(event))
                if isinstance(event, SequenceStartEvent)
                else Map([], *_at(event))
            )
            if event.anchor is not None:
                anchors[event.anchor] = opened
            stack.append(opened)
            keys.append(None)
            continue
        elif isinstance(event, SequenceEndEvent | MappingEndEvent):
            node = stack.pop()
            keys.pop()
            _add(stack, keys, node)
            if not stack:
                root = node
            continue
        elif isinstance(event, AliasEvent):
            found = anchors.get(event.anchor or "")
            if found is None:
                raise ComposeError(f"found undefined alias {event.anchor!r}", *_at(event))
            node = found
        elif isinstance(event, DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise ComposeError(
                    "expected a single YAML document, found another one", *_at(event)
                )
            continue
        elif isinstance(event, StreamEndEvent):
            break
        else:
            continue
        if isinstance(event, ScalarEvent) and event.anchor is not None:
            anchors[event.anchor] = node
        if stack:
            _add(stack, keys, node)
        else:
            root = node
    return root


def _add(stack: list[Seq | Map], keys: list[Node | None], node: Node) -> None:
    if not stack:
        return
    top = stack[-1]
    if isinstance(top, Seq):
        top.items.append(node)
        return
    key = keys[-1]
    if key is None:
        keys[-1] = node
    else:
        top.pairs.append((key, node))
        keys[-1] = None


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic collection inside (for building large acyclic trees in one go)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def compose(text: str) -> Node | None:
    """The one document in ``text`` as a node tree (None when empty); ComposeError if the
    text is not one YAML document."""
    try:
        with gc_paused():
            return _compose(text)
    except yaml.MarkedYAMLError as exc:
        if "nesting depth" in str(exc.problem):  # libyaml's own bound (1000 levels)
            raise ComposeError("nested too deeply") from None
        mark: Any = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        raise ComposeError(exc.problem or exc.context or "syntax error", line, column) from None
    except UnicodeEncodeError:  # a lone surrogate in a str given by a caller
        raise ComposeError("not valid Unicode text") from None
    except yaml.YAMLError as exc:
        text_ = str(exc).strip()
        raise ComposeError(text_.splitlines()[0] if text_ else type(exc).__name__) from None
