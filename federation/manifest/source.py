"""YAML text -> plain Python data plus the line and column of every key and value.

The text is composed into a node tree by :mod:`federation.manifest.compose` (libyaml
events, YAML 1.2 core schema: ``on``/``yes`` are strings, not booleans) and built into
dicts, lists and scalars by hand, so that duplicate keys are all reported (not only
the first), merge keys (``<<``) and anchors work, and every path in the result maps
back to where it was written.

Size is bounded twice: the loader caps the bytes of the text, and the builder caps
*expansion* — the nodes built again because an alias or a merge key (``<<: *x``)
refers to them (``MAX_EXPANDED``; "billion laughs"). An honest document of any size
under the byte limit is never refused for its number of nodes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from federation.manifest.compose import (
    MAX_DEPTH,
    TAG,
    ComposeError,
    Map,
    Node,
    Scalar,
    Seq,
    compose,
)
from federation.manifest.errors import Issue

Path = tuple[str | int, ...]
Mark = tuple[int, int]  # 1-based line, column

MAX_EXPANDED = 200_000  # nodes built again through aliases and merge keys


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def format_path(path: Path) -> str:
    """``services[1].retries.perTryTimeout``; a key that is not a plain name is quoted
    (``labels["a.b"]``), so that a path is always one line and unambiguous."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out or "(top)"


@dataclass
class Document:
    """The built data and where each part of it was written."""

    data: Any
    filename: str
    values: dict[Path, Mark] = field(default_factory=dict)  # path -> position of the value
    keys: dict[Path, Mark] = field(default_factory=dict)  # path -> position of its key
    issues: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)  # valid, but probably not meant

    def mark(self, path: Path, *, key: bool = False) -> Mark:
        """The position of ``path`` (its key if ``key``), else of its nearest written parent."""
        p = path
        while True:
            if key and p in self.keys:
                return self.keys[p]
            if p in self.values:
                return self.values[p]
            if p in self.keys:
                return self.keys[p]
            if not p:
                return (1, 1)
            p = p[:-1]

    def issue(self, path: Path, message: str, *, key: bool = False) -> Issue:
        line, column = self.mark(path, key=key)
        return Issue(line, column, format_path(path), message, self.filename)

    def add(self, path: Path, message: str, *, key: bool = False) -> None:
        self.issues.append(self.issue(path, message, key=key))

    def warn(self, path: Path, message: str) -> None:
        self.warnings.append(self.issue(path, f"warning: {message}"))


class SourceError(Exception):
    """The text is not a YAML document at all; ``issue`` says where and why."""

    def __init__(self, issue: Issue) -> None:
        super().__init__(str(issue))
        self.issue = issue


def _int(text: str) -> int:
    t = text.replace("_", "")
    sign = -1 if t.startswith("-") else 1
    t = t.lstrip("+-")
    if t.startswith("0x"):
        return sign * int(t[2:], 16)
    if t.startswith("0o"):
        return sign * int(t[2:], 8)
    if t.startswith("0b"):
        return sign * int(t[2:], 2)
    return sign * int(t, 10)


def _float(text: str) -> float:
    t = text.replace("_", "").lower()
    if t in (".inf", "+.inf"):
        return math.inf
    if t == "-.inf":
        return -math.inf
    if t == ".nan":
        return math.nan
    return float(t)


_SCALARS: dict[str, Callable[[str], Any]] = {
    TAG + "str": str,
    TAG + "int": _int,
    TAG + "float": _float,
    TAG + "bool": lambda t: t.lower() == "true",
    TAG + "null": lambda t: None,
    TAG + "merge": str,  # "<<" written as a value: just the text
    TAG + "timestamp": str,  # kept as written: no field of the manifest is a timestamp
}


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.built: set[int] = set()  # collections built once: building one again expands
        self.expanding = 0  # > 0 while building a collection again (an alias or a merge)
        self.expanded = 0
        self.open: set[int] = set()  # collections being built: an alias back to one recurses

    def _count(self, node: Node, path: Path) -> None:
        self.expanded += 1
        if self.expanded > MAX_EXPANDED:
            raise SourceError(
                Issue(
                    node.line,
                    node.column,
                    format_path(path),
                    f"YAML aliases expand to more than {MAX_EXPANDED} nodes (document too large)",
                    self.doc.filename,
                )
            )

    def build(self, node: Node, path: Path, depth: int = 0) -> Any:
        if self.expanding:
            self._count(node, path)
        if depth > MAX_DEPTH:  # the tree is bounded by compose; merge chains are not
            raise SourceError(
                Issue(
                    node.line, node.column, format_path(path), "nesting too deep", self.doc.filename
                )
            )
        self.doc.values.setdefault(path, (node.line, node.column))
        if isinstance(node, Scalar):
            return self.scalar(node, path)
        if id(node) in self.open:
            self.doc.add(path, "recursive YAML alias (a node that contains itself)")
            return None
        again = id(node) in self.built
        self.built.add(id(node))
        self.open.add(id(node))
        self.expanding += again
        try:
            if isinstance(node, Seq):
                return [
                    self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.items)
                ]
            return self.mapping(node, path, depth)
        finally:
            self.expanding -= again
            self.open.discard(id(node))

    def scalar(self, node: Scalar, path: Path) -> Any:
        tag = node.tag
        make = _SCALARS.get(tag)
        if make is None:
            self.doc.add(path, f"unsupported YAML tag {tag!r}")
            return node.value
        try:
            return make(node.value)
        except ValueError:
            self.doc.add(path, f"{node.value!r} is not a valid {tag.removeprefix(TAG)}")
            return node.value

    def key(self, node: Node, path: Path) -> str | None:
        if not isinstance(node, Scalar):
            self.doc.issues.append(
                Issue(
                    node.line,
                    node.column,
                    format_path(path),
                    "a key must be a scalar",
                    self.doc.filename,
                )
            )
            return None
        # keys are kept as written: `1:` or `true:` is the key "1" or "true", so that an
        # unknown key is reported by its name and paths stay readable
        return node.value

    def mapping(self, node: Map, path: Path, depth: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        first_seen: dict[Any, int] = {}
        merges: list[Node] = []
        for key_node, value_node in node.pairs:
            if isinstance(key_node, Scalar) and key_node.tag == TAG + "merge":
                merges.append(value_node)
                continue
            key = self.key(key_node, path)
            if key is None:
                continue
            child: Path = (*path, key)
            if key in first_seen:
                self.doc.issues.append(
                    Issue(
                        key_node.line,
                        key_node.column,
                        format_path(child),
                        f"duplicate key {key!r} (first at line {first_seen[key]})",
                        self.doc.filename,
                    )
                )
                continue
            first_seen[key] = key_node.line
            self.doc.keys.setdefault(child, (key_node.line, key_node.column))
            if isinstance(value_node, Scalar) and value_node.value == "" and value_node.plain:
                # an empty value (`key:` then nothing) is marked at the end of the line or
                # on the next one: point at the key instead
                self.doc.values.setdefault(child, (key_node.line, key_node.column))
            result[key] = self.build(value_node, child, depth + 1)
        for merge in merges:
            self._merge(merge, path, result, depth + 1)
        return result

    def _merge(self, merge: Node, path: Path, result: dict[Any, Any], depth: int) -> None:
        """``<<: *a`` or ``<<: [*a, *b]``: the keys of each source not already set.

        A source is built in place (its positions recorded only where nothing explicit
        was), once per merge: every node of it counts as an expansion when it was built
        before, so merge chains are bounded like aliases, in linear time.
        """
        if depth > MAX_DEPTH:
            raise SourceError(
                Issue(
                    merge.line,
                    merge.column,
                    format_path(path),
                    "merge keys nested too deep",
                    self.doc.filename,
                )
            )
        sources = merge.items if isinstance(merge, Seq) else [merge]
        for source in sources:
            if not isinstance(source, Map):
                self.doc.add(path, "a merge key ('<<') needs a mapping or a list of mappings")
                continue
            if id(source) in self.open:
                self.doc.add(path, "recursive YAML alias (a node that contains itself)")
                continue
            again = id(source) in self.built
            self.built.add(id(source))
            self.open.add(id(source))
            self.expanding += again
            try:
                values = self.mapping(source, path, depth)
            finally:
                self.expanding -= again
                self.open.discard(id(source))
            for k, v in values.items():
                result.setdefault(k, v)


def read_yaml(text: str, *, filename: str) -> Document:
    """Compose and build ``text``; raises :class:`SourceError` if it is not one YAML document."""
    try:
        node = compose(text)
    except ComposeError as exc:
        if exc.line:
            issue = Issue(exc.line, exc.column, "(top)", f"not valid YAML: {exc.problem}", filename)
        else:
            issue = Issue(0, 0, "", f"not valid YAML: {exc.problem}", filename)
        raise SourceError(issue) from None
    doc = Document(None, filename)
    if node is None:
        raise SourceError(Issue(1, 1, "(top)", "the manifest is empty", filename))
    doc.data = _Builder(doc).build(node, ())
    return doc
