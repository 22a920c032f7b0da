"""``fedgate explain --host H --path P [--from CLUSTER]``: why a request goes where it goes.

Asks a gateway's admin API (``GET /v1/routes/explain``, ``--admin`` and ``--token``) for
the decision trace: the matched route, every candidate cluster with state, score and the
reason it was chosen or not, the plan (first try, then retries) and the revision of the
view used. ``--output json`` prints the trace in camelCase. Exit 0 when a route matches,
1 when none does (the gateway would answer 404) or on a failure to ask, 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from federation.clikit import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    resolve_token,
    use_colour,
    wants_json,
    write_json,
)
from federation.commands.health import Painter, fetch_admin_json


def run(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    stream = out if out is not None else sys.stdout
    if not args.host and not getattr(args, "dns", None):
        raise CommandError(
            "give --host HOST (a request) or --dns HOST (a DNS answer) "
            "(see fedgate explain --help)",
            EXIT_USAGE,
        )
    if not args.admin:
        raise CommandError(
            "explain asks a gateway: give --admin URL (or FEDGATE_ADMIN) and --token-file "
            "(or FEDGATE_TOKEN)",
            EXIT_USAGE,
        )
    if getattr(args, "dns", None):
        from federation.commands.explain_dns import run_dns

        return run_dns(args, stream)
    if getattr(args, "client", None):
        raise CommandError("--client goes with --dns HOST", EXIT_USAGE)
    params: dict[str, str | list[str]] = {
        "host": args.host,
        "path": args.path or "/",
        "method": args.method or "GET",
    }
    if args.from_cluster:
        params["from"] = args.from_cluster
    if getattr(args, "header", None):
        params["header"] = list(args.header)
    status, body = fetch_admin_json(
        args.admin,
        "/v1/routes/explain",
        token=resolve_token(args),
        params=params,
        accept=(200, 400, 404),
    )
    if status == 400 and "revision" not in body:
        raise CommandError(str(body.get("error") or "the gateway refused the question"), EXIT_USAGE)
    if wants_json(args):
        write_json(stream, body)
    else:
        colour = use_colour(stream, no_color=getattr(args, "no_color", False))
        stream.write(render(body, colour=colour))
        stream.flush()
    return EXIT_OK if body.get("route") is not None else EXIT_FAILURE


def render(body: Mapping[str, Any], *, colour: bool = False) -> str:
    """The decision trace, readable."""
    paint = Painter(colour)
    lines: list[str] = []
    req = body.get("request") or {}
    origin = req.get("from")
    entering = f" (entering {origin})" if origin else ""
    lines.append(
        f"request    {req.get('method', 'GET')} {req.get('host', '?')}{req.get('path', '')}"
        f"{entering}"
    )
    stale = " STALE" if body.get("stale") else ""
    lines.append(
        f"view       revision {body.get('revision', '?')} (config "
        f"{body.get('config_revision', '?')}), from {body.get('view_source', '?')}{stale}"
    )
    route = body.get("route")
    if route is None:
        lines.append(paint("route      none: no registered route for this host and path", "bad"))
    else:
        lines.append(
            f"route      service {paint(str(route.get('service')), 'bold')} (host "
            f"{route.get('host')}, path prefix {route.get('pathPrefix', route.get('path_prefix'))})"
        )
        lines += [f"           {rule}" for rule in route.get("rules") or []]
        if route.get("backend"):
            lines.append(f"backend    {paint(str(route['backend']), 'bold')} (picked by the split)")
    considered = body.get("considered") or []
    if len(considered) > 1 or any(c.get("conditions") != "any request" for c in considered):
        lines.append("considered (in precedence order)")
        for c in considered:
            mark = paint("match", "healthy") if c.get("matched") else paint("no   ", "unknown")
            lines.append(
                f"  {mark} {c.get('service')} ({c.get('host')}{c.get('pathPrefix')}; "
                f"{c.get('conditions')}): {c.get('reason')}"
            )
    candidates = body.get("candidates") or []
    if candidates:
        lines.append("candidates")
        rows = [["CLUSTER", "TIER", "STATE", "SCORE", "CHOSEN", "REASON"]]
        styles: list[str | None] = [None]
        for c in candidates:
            score = c.get("score")
            rows.append(
                [
                    str(c.get("cluster")),
                    str(c.get("tier", "")),
                    str(c.get("state", "")),
                    f"{score:.2f}" if isinstance(score, int | float) else "-",
                    "yes" if c.get("chosen") else "",
                    str(c.get("reason", "")),
                ]
            )
            styles.append(str(c.get("state", "")))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r, style in zip(rows, styles, strict=True):
            cells = [r[i].ljust(widths[i]) for i in range(len(r) - 1)] + [r[-1]]
            if style:
                cells[2] = paint(cells[2], style)
            lines.append(("  " + "  ".join(cells)).rstrip())
    plan = body.get("plan")
    if plan is not None:
        lines.append("plan       " + (" -> ".join(plan) if plan else "(none)"))
    if body.get("decision"):
        lines.append(f"decision   {body['decision']}")
    if body.get("error") and route is not None:
        lines.append(paint(f"error      {body['error']}", "bad"))
    return "\n".join(lines) + "\n"
