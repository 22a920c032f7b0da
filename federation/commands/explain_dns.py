"""``fedgate explain --dns HOST [--client CIDR]``: what the federation's DNS answers, and why.

Asks a gateway's admin API (``GET /v1/dns/explain``): the zone, the service that owns
the name, its strategy, the records answered (A and AAAA) and every candidate cluster
as placement sees it, with its public entry. ``--output json`` prints the API's answer (camelCase).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any, TextIO

from federation.clikit import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    resolve_token,
    use_colour,
    wants_json,
    write_json,
)
from federation.commands.health import Painter, fetch_admin_json


def run_dns(args: argparse.Namespace, stream: TextIO) -> int:
    params = {"name": args.dns}
    if args.client:
        params["client"] = args.client
    status, body = fetch_admin_json(
        args.admin,
        "/v1/dns/explain",
        token=resolve_token(args),
        params=params,
        accept=(200, 400, 404),
    )
    if status != 200:
        raise CommandError(str(body.get("error") or "the gateway refused the question"), EXIT_USAGE)
    if wants_json(args):
        write_json(stream, body)
    else:
        colour = use_colour(stream, no_color=getattr(args, "no_color", False))
        stream.write(render_dns(body, colour=colour))
    stream.flush()
    return EXIT_OK


def _records(res: Mapping[str, Any]) -> str:
    rows = [f"{r.get('type')} {' '.join(r.get('data') or [])}" for r in res.get("answer") or []]
    return "; ".join(rows) if rows else "(none)"


def render_dns(body: Mapping[str, Any], *, colour: bool = False) -> str:
    paint = Painter(colour)
    client = body.get("client")
    lines = [f"name       {body.get('name')}" + (f" (client {client})" if client else "")]
    lines.append(
        f"view       revision {body.get('revision', '?')} (config "
        f"{body.get('config_revision', '?')}), from {body.get('view_source', '?')}"
    )
    a = body.get("A") or {}
    if a.get("rcode") == "REFUSED":
        lines.append(paint(f"answer     REFUSED: {a.get('why')}", "bad"))
        return "\n".join(lines) + "\n"
    lines.append(f"zone       {body.get('zone')}")
    sel = body.get("selection")
    if sel:
        lines.append(
            f"service    {paint(str(sel.get('service')), 'bold')} (strategy "
            f"{sel.get('strategy')}, ttl {sel.get('ttl')}s)"
        )
    for rdtype in ("A", "AAAA"):
        res = body.get(rdtype) or {}
        lines.append(f"{rdtype:<10} {res.get('rcode')}: {_records(res)}")
    if sel:
        lines.append(f"why        {sel.get('reason')}")
    else:
        lines.append(f"why        {a.get('why')}")
    candidates = body.get("candidates") or []
    if candidates:
        lines.append("candidates")
        rows = [["CLUSTER", "TIER", "STATE", "ANSWERED", "PUBLIC ENTRY", "REASON"]]
        for c in candidates:
            rows.append(
                [
                    str(c.get("cluster")),
                    str(c.get("tier", "")),
                    str(c.get("state", "")),
                    "yes" if c.get("answered") else "",
                    str(c.get("public_entry") or "-"),
                    str(c.get("reason", "")),
                ]
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            cells = [r[i].ljust(widths[i]) for i in range(len(r) - 1)] + [r[-1]]
            lines.append(("  " + "  ".join(cells)).rstrip())
    return "\n".join(lines) + "\n"
