"""Cross-field checks of one route's routing rules (match, backends, sticky, rewrite,
redirect, header rules), on the raw YAML data like ``federation.manifest.checks``.

Single values (a header name, a status code, a duration) are checked by the wire models;
here: "exactly one of", "not together with", unknown and repeated names.
"""

from __future__ import annotations

import difflib
from typing import Any

from federation.manifest.source import Document, Path
from federation.model import HOP_BY_HOP_HEADERS

# request or response headers a rule may not touch: the gateway owns them
_OWNED = {n.decode() for n in HOP_BY_HOP_HEADERS} | {"content-length", "host"}
_VALUE_KINDS = ("exact", "prefix", "present")
_REDIRECT_PARTS = ("scheme", "host", "port", "path", "pathPrefix")
_NOT_WITH_REDIRECT = ("backends", "sticky", "rewrite", "requestHeaders", "timeout")


def _items(value: Any) -> list[tuple[int, Any]]:
    return list(enumerate(value)) if isinstance(value, list) else []


def _given(section: dict[Any, Any], keys: tuple[str, ...]) -> list[str]:
    return [k for k in keys if section.get(k) is not None]


def conditions_key(match: Any) -> str:
    """A canonical text of a route's match conditions ("" when none), so that two routes
    differing only in the order of their conditions are seen as the same route."""
    if not isinstance(match, dict):
        return ""
    parts: list[str] = []
    methods = match.get("methods")
    if isinstance(methods, list) and methods:
        parts.append("methods=" + ",".join(sorted(str(m) for m in methods)))
    for section, fold in (("headers", True), ("query", False)):
        items = []
        for _, cond in _items(match.get(section)):
            if isinstance(cond, dict):
                name = str(cond.get("name", ""))
                items.append(
                    (name.lower() if fold else name)
                    + "".join(f";{k}={cond[k]!r}" for k in _VALUE_KINDS if k in cond)
                )
        if items:
            parts.append(section + "=" + ",".join(sorted(items)))
    return " ".join(parts)


def _unknown_service(name: str, services: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(services), n=1)
    if close:
        return f"unknown service {name!r} (did you mean {close[0]!r}?)"
    known = ", ".join(sorted(services)) or "none"
    return f"unknown service {name!r} (services: {known})"


def check_route(doc: Document, base: Path, route: dict[Any, Any], services: set[str]) -> None:
    """Append every cross-field problem of one route (``base`` is its path)."""
    match = route.get("match")
    if isinstance(match, dict):
        seen: set[str] = set()
        for k, method in _items(match.get("methods")):
            if isinstance(method, str):
                if method in seen:
                    doc.add((*base, "match", "methods", k), f"method {method!r} is listed twice")
                seen.add(method)
        for section in ("headers", "query"):
            for k, cond in _items(match.get(section)):
                if isinstance(cond, dict) and len(_given(cond, _VALUE_KINDS)) != 1:
                    doc.add(
                        (*base, "match", section, k),
                        "give exactly one of exact, prefix or present, got "
                        + (" and ".join(_given(cond, _VALUE_KINDS)) or "none"),
                    )
    backends = route.get("backends")
    _check_backends(doc, base, backends, services)
    sticky = route.get("sticky")
    if isinstance(sticky, dict):
        given = _given(sticky, ("header", "cookie"))
        if len(given) != 1:
            doc.add(
                (*base, "sticky"),
                "give exactly one of header or cookie, got " + (" and ".join(given) or "none"),
            )
        if not (isinstance(backends, list) and len(backends) >= 2):
            doc.add(
                (*base, "sticky"),
                "sticky needs a split: backends with two or more services",
                key=True,
            )
    rewrite = route.get("rewrite")
    if isinstance(rewrite, dict) and not _given(rewrite, ("pathPrefix", "host")):
        doc.add((*base, "rewrite"), "give pathPrefix, host or both")
    redirect = route.get("redirect")
    if isinstance(redirect, dict):
        if not _given(redirect, _REDIRECT_PARTS):
            doc.add(
                (*base, "redirect"),
                "give at least one of scheme, host, port, path or pathPrefix "
                "(a redirect to the same URL loops)",
            )
        if _given(redirect, ("path", "pathPrefix")) == ["path", "pathPrefix"]:
            doc.add((*base, "redirect", "pathPrefix"), "give path or pathPrefix, not both")
        for key in _NOT_WITH_REDIRECT:
            if route.get(key) is not None:
                doc.add(
                    (*base, key),
                    f"a redirect route answers by itself: remove {key} (or the redirect)",
                    key=True,
                )
    for section in ("requestHeaders", "responseHeaders"):
        rules = route.get(section)
        if isinstance(rules, dict):
            _check_header_rules(doc, (*base, section), rules)


def _check_backends(doc: Document, base: Path, backends: Any, services: set[str]) -> None:
    listed: set[str] = set()
    total = 0
    weights_known = True
    for k, backend in _items(backends):
        if not isinstance(backend, dict):
            weights_known = False
            continue
        name = backend.get("service")
        if isinstance(name, str):
            path: Path = (*base, "backends", k, "service")
            if name in listed:
                doc.add(path, f"service {name!r} is listed twice")
            listed.add(name)
            if name not in services:
                doc.add(path, _unknown_service(name, services))
        weight = backend.get("weight", 1)
        if isinstance(weight, int) and not isinstance(weight, bool):
            total += weight
        else:
            weights_known = False
    if isinstance(backends, list) and backends and weights_known and total <= 0:
        doc.add((*base, "backends"), "every weight is 0: at least one backend needs weight > 0")


def _check_header_rules(doc: Document, base: Path, rules: dict[Any, Any]) -> None:
    names: dict[str, str] = {}
    for op in ("add", "set", "remove"):
        section = rules.get(op)
        entries: list[tuple[Path, Any]] = []
        if isinstance(section, dict):
            entries = [((*base, op, n), n) for n in section]
        elif isinstance(section, list):
            entries = [((*base, op, k), n) for k, n in _items(section)]
        for path, raw in entries:
            if not isinstance(raw, str):
                continue
            name = raw.lower()
            if name in _OWNED or name.startswith("x-fedgate-"):
                hint = " (use rewrite.host)" if name == "host" else ""
                doc.add(path, f"header {raw!r} is set by the gateway itself{hint}", key=True)
            elif name in names and {names[name], op} != {"add"}:
                doc.add(path, f"header {raw!r} is already in {names[name]}", key=True)
            names.setdefault(name, op)
