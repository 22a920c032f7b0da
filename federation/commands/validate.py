"""``fedgate validate FILE``: check a manifest without touching anything.

Exit 0 with a one-line summary (warnings, if any, on stderr, in the same format as
errors with ``warning:`` in front of the message), or exit 2 with one
``FILE:LINE:COLUMN: field.path: message`` line per problem on stderr. With
``--output json`` the result is one document on stdout either way (``valid``, the counts,
``errors`` and ``warnings`` as ``{file, line, column, path, message}``), exit codes alike.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import Any

from federation.clikit import EXIT_OK, EXIT_USAGE, wants_json, write_json
from federation.manifest import Issue, ManifestError, check_manifest
from federation.model import CLOUDS, Federation


def summary(federation: Federation, *, filename: str) -> str:
    """``FILE: ok: federation NAME, 5 clusters (aws, onprem), 2 tiers, 3 services, 7 routes``"""
    clouds = [c for c in CLOUDS if any(cl.cloud == c for cl in federation.clusters)]
    tiers = len({c.tier for c in federation.clusters})
    routes = sum(len(s.routes) for s in federation.services)
    return (
        f"{filename}: ok: federation {federation.name}, "
        f"{_count(len(federation.clusters), 'cluster')} ({', '.join(clouds)}), "
        f"{_count(tiers, 'tier')}, {_count(len(federation.services), 'service')}, "
        f"{_count(routes, 'route')}"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _issues(issues: Iterable[Issue]) -> list[dict[str, Any]]:
    return [
        {"file": i.file, "line": i.line, "column": i.column, "path": i.path, "message": i.message}
        for i in issues
    ]


def run(args: argparse.Namespace) -> int:
    as_json = wants_json(args)
    try:
        checked = check_manifest(args.file)
    except ManifestError as exc:
        if as_json:
            write_json(
                sys.stdout,
                {"file": args.file, "valid": False, "errors": _issues(exc.issues), "warnings": []},
            )
            return EXIT_USAGE
        for line in exc.lines:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    if as_json:
        fed = checked.federation
        write_json(
            sys.stdout,
            {
                "file": args.file,
                "valid": True,
                "federation": fed.name,
                "clusters": len(fed.clusters),
                "services": len(fed.services),
                "routes": sum(len(s.routes) for s in fed.services),
                "errors": [],
                "warnings": _issues(checked.warnings),
            },
        )
        return EXIT_OK
    for warning in checked.warnings:
        print(warning, file=sys.stderr)
    line = summary(checked.federation, filename=args.file)
    if checked.warnings:
        line += f" ({_count(len(checked.warnings), 'warning')})"
    print(line)
    return EXIT_OK
