"""``fedgate health [--json] [--watch]``: the global health of the federation.

With ``--admin URL`` (and ``--token``) it asks a gateway's admin API
(``GET /v1/health/global``); otherwise it reads etcd itself (``--etcd``, ``--prefix``)
and builds the same document from a one-shot routing view. Either way the answer is the
same: any gateway, and etcd, know the whole federation.

The text summarises first (counts, convergence), then lists what is not healthy: the
clusters grouped by cloud and environment and the service x cluster matrix, restricted to
the clusters that are not healthy once the federation has more than
:data:`FULL_TABLE_CLUSTERS` clusters (``--all`` lists every one). State is coloured on a
terminal only (``NO_COLOR``, ``--no-color`` and ``--output json`` turn colour off).
``--output json`` prints the document in camelCase.

Exit 0 when every cluster is healthy or degraded and every service is served somewhere,
1 otherwise (and on any failure to ask). ``--watch`` redraws every ``--interval`` seconds
until Ctrl-C or SIGTERM, then exits 0; a closed pipe (``| head``) ends it quietly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from federation.clikit import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    camelize,
    isatty,
    resolve_token,
    use_colour,
    wants_json,
)
from federation.healthquery import MAX_LIMIT, HealthQuery

__all__ = ["Painter", "fetch_admin_json", "render", "run", "use_colour", "watch"]

FULL_TABLE_CLUSTERS = 12  # above this, the tables list only what is not healthy

Fetch = Callable[[], dict[str, Any]]

DEFAULT_ETCD = "http://127.0.0.1:2379"

_COLOURS = {
    "healthy": "\x1b[32m",
    "degraded": "\x1b[33m",
    "unhealthy": "\x1b[31;1m",
    "unknown": "\x1b[90m",
    "warn": "\x1b[33m",
    "bad": "\x1b[31m",
    "bold": "\x1b[1m",
    "dim": "\x1b[2m",
}
_RESET = "\x1b[0m"
_SYMBOL = {"healthy": "●", "degraded": "▲", "unhealthy": "✖", "unknown": "?"}


# ------------------------------------------------------------------------- sources


def admin_url(admin: str) -> str:
    """``host:port`` or a URL -> a base URL without trailing slash."""
    admin = admin.strip()
    if "://" not in admin:
        admin = "http://" + admin
    parsed = urllib.parse.urlsplit(admin)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise CommandError(f"--admin must be http(s)://host:port, got {admin!r}", EXIT_USAGE)
    try:
        parsed.port  # noqa: B018 - a bad port raises here, not in urlopen
    except ValueError:
        raise CommandError(
            f"--admin must be http(s)://host:port, got {admin!r}", EXIT_USAGE
        ) from None
    return admin.rstrip("/")


def fetch_admin_json(
    admin: str,
    path: str,
    *,
    token: str | None,
    params: Mapping[str, str | list[str]] | None = None,
    timeout: float = 5.0,
    accept: Sequence[int] = (200,),
) -> tuple[int, dict[str, Any]]:
    """GET ``path`` on the admin API; ``(status, body)`` for statuses in ``accept``.

    Every other outcome (unreachable, 401, 5xx, not JSON) is a one-line CommandError.
    """
    base = admin_url(admin)
    url = base + path
    if params:
        url += "?" + urllib.parse.urlencode(params, doseq=True)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
        if status == 401:
            hint = "" if token else " (give --token-file or FEDGATE_TOKEN)"
            raise CommandError(f"the admin API at {base} refused the token (401){hint}") from None
        if status not in accept:
            raise CommandError(
                f"the admin API at {base} answered {status}{_error_of(raw)}"
            ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommandError(f"cannot reach the admin API at {base}: {reason}") from None
    try:
        body = json.loads(raw)
    except ValueError:
        raise CommandError(f"the admin API at {base} did not answer JSON") from None
    if not isinstance(body, dict):
        raise CommandError(f"the admin API at {base} answered an unexpected document")
    return status, body


def _error_of(raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        return ""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return f": {body['error']}"
    return ""


def from_admin(args: argparse.Namespace) -> Fetch:
    token = resolve_token(args)

    def fetch() -> dict[str, Any]:
        # the API pages its lists (worst first); a person's view wants as much as it gives
        params = {"limit": str(MAX_LIMIT)}
        return fetch_admin_json(args.admin, "/v1/health/global", token=token, params=params)[1]

    return fetch


def from_etcd(args: argparse.Namespace) -> Fetch:
    from federation.keys import DEFAULT_PREFIX, KeyLayout

    endpoints = [e.strip() for e in (args.etcd or DEFAULT_ETCD).split(",") if e.strip()]
    try:
        layout = KeyLayout(args.prefix or DEFAULT_PREFIX)
    except ValueError as exc:
        raise CommandError(f"--prefix: {exc}", EXIT_USAGE) from None

    async def load() -> dict[str, Any]:
        from federation.commands.apply import etcd_options
        from federation.etcd import EtcdClient, EtcdError
        from federation.globalhealth import global_health
        from federation.view import load_view

        try:
            client = EtcdClient(endpoints, timeout=2.0, **etcd_options(args))
        except ValueError as exc:
            raise CommandError(f"--etcd: {exc}", EXIT_USAGE) from None
        try:
            await client.connect()
            view = await load_view(client, layout)
        except EtcdError as exc:
            raise CommandError(f"etcd: {exc}") from None
        finally:
            await client.close()
        # in process there is no answer size to bound: every cluster and service
        whole = HealthQuery(limit=max(1, len(view.clusters), len(view.services)))
        return global_health(view, now=time.time(), query=whole)

    def fetch() -> dict[str, Any]:
        return asyncio.run(load())

    return fetch


# ----------------------------------------------------------------------- rendering


class Painter:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, style: str | None) -> str:
        if not self.enabled or not style or style not in _COLOURS:
            return text
        return f"{_COLOURS[style]}{text}{_RESET}"


def _table(rows: list[list[tuple[str, str | None]]], paint: Painter, indent: str = "") -> list[str]:
    """Rows of (text, style) cells -> aligned lines (padding computed on plain text)."""
    if not rows:
        return []
    widths = [0] * max(len(r) for r in rows)
    for r in rows:
        for i, (text, _) in enumerate(r):
            widths[i] = max(widths[i], len(text))
    out = []
    for r in rows:
        cells = []
        for i, (text, style) in enumerate(r):
            pad = " " * (widths[i] - len(text)) if i < len(r) - 1 else ""
            cells.append(paint(text, style) + pad)
        out.append((indent + "  ".join(cells)).rstrip())
    return out


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds <= 0:
        return "EXPIRED"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.0f}d"


def healthy(body: Mapping[str, Any]) -> bool:
    """No cluster unhealthy and every service served somewhere: the exit status 0."""
    if any(c["state"] == "unhealthy" for c in body["clusters"]):
        return False
    return all(s.get("serving", True) for s in body["services"])


def render(body: Mapping[str, Any], *, colour: bool = False, every: bool = False) -> str:
    """The global health document as text: the summary, then what is not healthy.

    Up to FULL_TABLE_CLUSTERS clusters (or with ``every``) the tables list every cluster;
    above, only the clusters that are not healthy, so 1,000 clusters stay readable."""
    paint = Painter(colour)
    s = body["summary"]
    conv = body["convergence"]
    lines: list[str] = []
    name = body.get("federation") or "(unnamed)"
    source = body.get("source", "?")
    stale = paint(" STALE", "warn") if body.get("stale") else ""
    lines.append(
        paint(f"federation {name}", "bold")
        + f"  revision {body['revision']} (config {body['config_revision']}), view from {source}"
        + stale
    )
    counts = ", ".join(
        paint(f"{s[state]} {state}", state if s[state] else None)
        for state in ("healthy", "degraded", "unhealthy", "unknown")
    )
    share = "-" if conv["share"] is None else f"{conv['share'] * 100:.0f}%"
    conv_style = "warn" if conv["share"] is not None and conv["share"] < 1 else None
    lines.append(
        f"clusters {s['clusters']}: {counts}; gateways {s['gateways']}; "
        f"services serving {s['services_serving']}/{s['services']}; "
        + paint(f"convergence {share} on config revision {conv['config_revision']}", conv_style)
    )
    unserved = [svc["name"] for svc in body["services"] if not svc.get("serving", True)]
    if unserved:
        lines.append(paint(f"not served anywhere: {', '.join(unserved)}", "bad"))
    _warnings(body, paint, lines)
    lines.append("")

    everything = every or int(s["clusters"]) <= FULL_TABLE_CLUSTERS
    shown = [c for c in body["clusters"] if everything or c["state"] != "healthy"]
    if not everything:
        hidden = int(s["clusters"]) - len(shown)
        lines.append(
            paint(
                f"{len(shown)} clusters not healthy "
                f"({hidden} healthy not listed; --all lists them)",
                "dim",
            )
            if shown
            else f"every cluster is healthy ({hidden}; --all lists them)"
        )
    lines.extend(_cluster_table(shown, paint))
    if not body["clusters"]:
        lines.append("no cluster is registered (fedgate apply)")

    # -- services x clusters (the shown clusters; above the limit, only services not healthy)
    lines.append("")
    names = [c["name"] for c in shown]
    mrows: list[list[tuple[str, str | None]]] = [[("SERVICE", "dim"), *((n, "dim") for n in names)]]
    for svc in body["services"]:
        by_cluster = {r["cluster"]: r for r in svc["clusters"]}
        if not everything and all(
            by_cluster.get(n, {}).get("state", "healthy") == "healthy" for n in names
        ):
            continue
        row: list[tuple[str, str | None]] = [(svc["name"], "bold")]
        for n in names:
            r = by_cluster.get(n)
            if r is None:
                row.append(("-", "dim"))
            else:
                cell = f"{r['state']} {r['healthy_endpoints']}/{r['total_endpoints']}"
                if r["error_rate"] >= 0.005:
                    cell += f" err {r['error_rate'] * 100:.0f}%"
                row.append((cell, r["state"]))
        mrows.append(row)
    if not body["services"]:
        lines.append("no service is registered")
    elif len(mrows) > 1 and names:
        lines.extend(_table(mrows, paint))
    return "\n".join(lines).rstrip("\n") + "\n"


def _cluster_table(clusters: list[Mapping[str, Any]], paint: Painter) -> list[str]:
    """The clusters, grouped by cloud / environment."""
    if not clusters:
        return []
    header: list[tuple[str, str | None]] = [
        (h, "dim")
        for h in ("CLUSTER", "REGION", "TIER", "STATE", "SCORE", "GATEWAYS", "REVISION", "CERT")
    ]
    rows: list[list[tuple[str, str | None]]] = [header]
    group: tuple[str, str] | None = None
    group_rows: list[int] = []
    for c in clusters:
        key = (c["cloud"], c["environment"])
        if key != group:
            group = key
            group_rows.append(len(rows))
            rows.append([(f"{c['cloud']} / {c['environment']}", "bold")])
        gws = c["gateways"]
        revisions = sorted({g["applied_revision"] for g in gws})
        converged = all(g["converged"] for g in gws)
        rev = ",".join(str(r) for r in revisions) or "-"
        rev_cell = (rev + (" ok" if converged else " behind")) if gws else "-"
        expiries = [g["cert_expires_in"] for g in gws if g["cert_expires_in"] is not None]
        warn = any(g["cert_warning"] for g in gws)
        cert = human_duration(min(expiries)) if expiries else "-"
        if any(g["renewal_failing"] for g in gws):
            cert += " renewal failing"
        state = c["state"]
        rows.append(
            [
                ("  " + c["name"], None),
                (c["region"], None),
                (str(c["tier"]), None),
                (f"{_SYMBOL.get(state, '?')} {state}", state),
                (f"{c['score']:.2f}", None),
                (str(c["live_gateways"]), None if gws else "bad"),
                (rev_cell, None if converged else "warn"),
                (cert, "bad" if warn else None),
            ]
        )
    return _table_with_groups(rows, set(group_rows), paint)


def _warnings(body: Mapping[str, Any], paint: Painter, lines: list[str]) -> None:
    """Expiring certificates, lagging gateways, rejected etcd values: right under the summary."""
    conv = body["convergence"]
    for e in body["certificates"]["expiring"]:
        what = "renewal failing" if e["renewal_failing"] else "expires soon"
        lines.append(
            paint(
                f"{'ACME certificate ' + e['name'] if e.get('source') == 'acme' else 'certificate'}"
                f" of {e['gateway']} ({e['cluster']}): {what}, "
                f"expires in {human_duration(e['expires_in'])}",
                "bad",
            )
        )
    for lag in conv["lagging"]:
        lines.append(
            paint(
                f"gateway {lag['gateway']} ({lag['cluster']}) applied revision "
                f"{lag['applied_revision']}, newest is {conv['config_revision']}",
                "warn",
            )
        )
    for r in body["rejected"]:
        lines.append(paint(f"rejected {r['key']} (revision {r['revision']}): {r['error']}", "bad"))


def _table_with_groups(
    rows: list[list[tuple[str, str | None]]], groups: set[int], paint: Painter
) -> list[str]:
    """Like _table, but group title rows span the line and do not widen the columns."""
    body = [r for i, r in enumerate(rows) if i not in groups]
    aligned = iter(_table(body, paint))
    out = []
    for i, r in enumerate(rows):
        out.append(paint(r[0][0], r[0][1]) if i in groups else next(aligned))
    return out


# -------------------------------------------------------------------------- command


def run(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    stream = out if out is not None else sys.stdout
    fetch = from_admin(args) if args.admin else from_etcd(args)
    as_json = wants_json(args)
    colour = not as_json and use_colour(stream, no_color=getattr(args, "no_color", False))
    every = bool(getattr(args, "all", False))
    if not args.watch:
        body = fetch()
        stream.write(_format(body, as_json, colour, every))
        stream.flush()
        return EXIT_OK if healthy(body) else EXIT_FAILURE
    return watch(
        fetch, stream=stream, as_json=as_json, colour=colour, interval=args.interval, every=every
    )


def _format(body: Mapping[str, Any], as_json: bool, colour: bool, every: bool = False) -> str:
    if as_json:
        return json.dumps(camelize(body), indent=2) + "\n"
    return render(body, colour=colour, every=every)


def watch(
    fetch: Fetch,
    *,
    stream: TextIO,
    as_json: bool,
    colour: bool,
    interval: float,
    every: bool = False,
) -> int:
    """Redraw every ``interval`` seconds until Ctrl-C or SIGTERM (exit 0). With --output
    json: one compact document per line. A failed fetch is shown and retried (the
    federation is watched through outages); the first one is fatal. A closed pipe
    propagates as BrokenPipeError (the caller ends quietly)."""
    if not interval > 0 or interval != interval or interval == float("inf"):
        raise CommandError("--interval must be a positive number of seconds", EXIT_USAGE)
    clear = "\x1b[H\x1b[2J" if isatty(stream) and not as_json else ""
    first = True
    try:
        while True:
            started = time.monotonic()
            try:
                body = fetch()
                text = (
                    json.dumps(camelize(body), separators=(",", ":")) + "\n"
                    if as_json
                    else render(body, colour=colour, every=every)
                )
            except CommandError as exc:
                if first:
                    raise
                text = f"fedgate health: {exc}\n"
            first = False
            stamp = "" if as_json else f"every {interval:g}s · {time.strftime('%H:%M:%S')}\n"
            stream.write(clear + stamp + text)
            stream.flush()
            time.sleep(max(0.0, interval - (time.monotonic() - started)))  # the watch period
    except KeyboardInterrupt:
        return EXIT_OK
