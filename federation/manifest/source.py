"""YAML text -> plain Python data plus the line and column of every key and value.

The text is composed into a node tree with ruamel.yaml (YAML 1.2: ``on``/``yes`` are
strings, not booleans) and built into dicts, lists and scalars by hand, so that
duplicate keys are all reported (not only the first), merge keys (``<<``) and anchors
work, and every path in the result maps back to where it was written.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from federation.manifest.errors import Issue

Path = tuple[str | int, ...]
Mark = tuple[int, int]  # 1-based line, column

MAX_NODES = 200_000  # alias expansion bound ("billion laughs")
MAX_DEPTH = 64

_TAG = "tag:yaml.org,2002:"


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


def _tag(node: Node) -> str:
    tag = node.tag
    text = tag if isinstance(tag, str) else getattr(tag, "value", None) or str(tag)
    return text


def _mark(node: Node) -> Mark:
    m = node.start_mark
    return (m.line + 1, m.column + 1)


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
    _TAG + "str": str,
    _TAG + "int": _int,
    _TAG + "float": _float,
    _TAG + "bool": lambda t: t.lower() == "true",
    _TAG + "null": lambda t: None,
    _TAG + "timestamp": str,  # kept as written: no field of the manifest is a timestamp
}


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.count = 0
        self.open: set[int] = set()  # collections being built: an alias back to one recurses

    def build(self, node: Node, path: Path, depth: int = 0) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise SourceError(
                Issue(*_mark(node), format_path(path), "document too large", self.doc.filename)
            )
        if depth > MAX_DEPTH:
            raise SourceError(
                Issue(*_mark(node), format_path(path), "nesting too deep", self.doc.filename)
            )
        self.doc.values.setdefault(path, _mark(node))
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.open:
            self.doc.add(path, "recursive YAML alias (a node that contains itself)")
            return None
        self.open.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return [
                    self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)
                ]
            if isinstance(node, MappingNode):
                return self.mapping(node, path, depth)
        finally:
            self.open.discard(id(node))
        self.doc.add(path, "unsupported YAML node")  # pragma: no cover
        return None

    def scalar(self, node: ScalarNode, path: Path) -> Any:
        tag = _tag(node)
        make = _SCALARS.get(tag)
        if make is None:
            self.doc.add(path, f"unsupported YAML tag {tag!r}")
            return node.value
        try:
            return make(node.value)
        except ValueError:
            self.doc.add(path, f"{node.value!r} is not a valid {tag.removeprefix(_TAG)}")
            return node.value

    def key(self, node: Node, path: Path) -> str | None:
        if not isinstance(node, ScalarNode):
            self.doc.issues.append(
                Issue(*_mark(node), format_path(path), "a key must be a scalar", self.doc.filename)
            )
            return None
        # keys are kept as written: `1:` or `true:` is the key "1" or "true", so that an
        # unknown key is reported by its name and paths stay readable
        return str(node.value)

    def mapping(self, node: MappingNode, path: Path, depth: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        first_seen: dict[Any, int] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and _tag(key_node) == _TAG + "merge":
                merges.append(value_node)
                continue
            key = self.key(key_node, path)
            if key is None:
                continue
            child: Path = (*path, key)
            if key in first_seen:
                line = first_seen[key]
                self.doc.issues.append(
                    Issue(
                        *_mark(key_node),
                        format_path(child),
                        f"duplicate key {key!r} (first at line {line})",
                        self.doc.filename,
                    )
                )
                continue
            first_seen[key] = _mark(key_node)[0]
            self.doc.keys[child] = _mark(key_node)
            if (
                isinstance(value_node, ScalarNode)
                and value_node.value == ""
                and not getattr(value_node, "style", None)
            ):
                # an empty value (`key:` then nothing) is marked at the end of the line or
                # on the next one: point at the key instead
                self.doc.values[child] = _mark(key_node)
            result[key] = self.build(value_node, child, depth + 1)
        for merge in merges:
            sources = merge.value if isinstance(merge, SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, MappingNode):
                    self.doc.add(path, "a merge key ('<<') needs a mapping or a list of mappings")
                    continue
                if id(source) in self.open:
                    self.doc.add(path, "recursive YAML alias (a node that contains itself)")
                    continue
                merged = _Builder(Document(None, self.doc.filename))
                merged.count = self.count
                merged.open = self.open
                self.open.add(id(source))
                try:
                    values = merged.mapping(source, path, depth + 1)
                finally:
                    self.open.discard(id(source))
                self.count = merged.count
                for k, v in values.items():
                    if k not in result:
                        result[k] = v
                        for p, m in merged.doc.values.items():
                            if p[: len(path) + 1] == (*path, k):
                                self.doc.values.setdefault(p, m)
                        for p, m in merged.doc.keys.items():
                            if p[: len(path) + 1] == (*path, k):
                                self.doc.keys.setdefault(p, m)
                self.doc.issues.extend(merged.doc.issues)
        return result


def read_yaml(text: str, *, filename: str) -> Document:
    """Compose and build ``text``; raises :class:`SourceError` if it is not one YAML document."""
    try:
        node = YAML(typ="rt").compose(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        problem = exc.problem or exc.context or "syntax error"
        if exc.context and exc.problem and "single document" in exc.context:
            problem = "expected a single YAML document, found another one"
        raise SourceError(
            Issue(line, column, "(top)", f"not valid YAML: {problem}", filename)
        ) from None
    except YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(Issue(0, 0, "", f"not valid YAML: {first}", filename)) from None
    except RecursionError:
        raise SourceError(Issue(0, 0, "", "not valid YAML: nested too deeply", filename)) from None
    doc = Document(None, filename)
    if node is None:
        raise SourceError(Issue(1, 1, "(top)", "the manifest is empty", filename))
    doc.data = _Builder(doc).build(node, ())
    return doc
