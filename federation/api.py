"""The admin API (Starlette): health probes, global health, route explanations, metrics,
the status page and the API's OpenAPI document.

Everything but ``/healthz``, ``/readyz`` (and the status page's static assets, which
carry no data) needs ``Authorization: Bearer <token>``; ``/metrics`` too, since it names
services, clusters, health and certificate expiry, unless ``admin.publicMetrics: true``
(a scraper that cannot send a bearer token). The token is compared in
constant time; a refusal is ``401`` with ``WWW-Authenticate: Bearer``. ``GET /`` without
a token answers ``401`` too, with the status page as body: the page asks for the token,
keeps it in the browser's ``sessionStorage`` and sends it as a bearer header with every
API call (never in a cookie or a URL sent to the server).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from federation.globalhealth import global_health
from federation.healthquery import QueryError, parse_query
from federation.openapi import openapi_document
from federation.openapi_schemas import (
    HEADER_PATTERN,
    HOST_PATTERN,
    METHOD_PATTERN,
    PATH_PATTERN,
)
from federation.trends import Totals, Trends
from gateway.telemetry import CONTENT_TYPE, Telemetry
from gateway.types import ViewHolder

__all__ = ["create_admin_app", "global_health"]

STATIC_DIR = Path(__file__).parent / "static"
REALM = "fedgate"

Explain = Callable[..., dict[str, Any]]  # (host, path, method, origin[, headers])


class DnsAdmin(Protocol):
    """The DNS listener's admin side (``gateway/dns``; None when ``listen.dns`` is off)."""

    def summary(self) -> dict[str, Any]: ...

    def explain(self, name: str, client: str | None) -> dict[str, Any]: ...  # ValueError: 400


Endpoint = Callable[[Request], Awaitable[Response]]

# the same patterns as the OpenAPI document (and the same matching: re.search)
_HOST = re.compile(HOST_PATTERN)
_PATH = re.compile(PATH_PATTERN)
_METHOD = re.compile(METHOD_PATTERN)
_HEADER = re.compile(HEADER_PATTERN)

_NO_STORE = {"Cache-Control": "no-store"}
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={**_NO_STORE, **(headers or {})})


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return _json({"error": message}, status, headers)


class _Auth:
    """Constant-time bearer token check."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None

    def check(self, request: Request) -> str | None:
        """None when authorized, else the reason (for the 401 body)."""
        header = request.headers.get("authorization")
        if self._token is None:
            return "no admin token is configured on this gateway"
        if not header:
            return "missing bearer token"
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return "expected Authorization: Bearer <token>"
        try:
            given = value.strip().encode("ascii")
        except UnicodeEncodeError:
            return "invalid bearer token"
        if not hmac.compare_digest(given, self._token):
            return "invalid bearer token"
        return None

    @staticmethod
    def challenge(reason: str) -> dict[str, str]:
        if reason.startswith("missing"):
            return {"WWW-Authenticate": f'Bearer realm="{REALM}"'}
        return {"WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_token"'}

    def protect(self, endpoint: Endpoint) -> ASGIApp:
        return _Protected(self, endpoint)


class _Protected:
    """Token first, then the method: without a token nothing is revealed, not even which
    methods a route has (an ASGI app, not a function, so the router passes every method)."""

    def __init__(self, auth: _Auth, endpoint: Endpoint) -> None:
        self.auth = auth
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        reason = self.auth.check(request)
        if reason is not None:
            response: Response = _error(401, reason, self.auth.challenge(reason))
        elif request.method not in ("GET", "HEAD"):
            response = _error(405, "method not allowed", {"Allow": "GET, HEAD"})
        else:
            response = await self.endpoint(request)
        await response(scope, receive, send)


class _AnyMethod:
    """An endpoint that sees every method (it refuses the wrong ones itself, after auth)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.endpoint(Request(scope, receive))
        await response(scope, receive, send)


class _Static:
    """The status page's assets (public: code, no data), no directory listing."""

    def __init__(self) -> None:
        self._files = StaticFiles(directory=STATIC_DIR, check_dir=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            response: Response = _error(405, "method not allowed", {"Allow": "GET, HEAD"})
            await response(scope, receive, send)
            return
        await self._files(scope, receive, send)


def create_admin_app(
    *,
    holder: ViewHolder,
    token: str | None,
    gateway_id: str,
    cluster: str,
    telemetry: Telemetry | None,
    explain: Explain,
    ready: Callable[[], bool],
    status: Callable[[], dict[str, object]],
    clock: Callable[[], float] = time.time,
    public_metrics: bool = False,
    trends: Trends | None = None,
    dns: DnsAdmin | None = None,
) -> Starlette:
    """The admin app of one gateway (the composition root passes the callables)."""
    auth = _Auth(token)

    def totals() -> Totals:
        return Totals(*telemetry.totals()) if telemetry is not None else Totals(0.0, 0.0, 0.0)

    if trends is None:
        trends = Trends(totals)

    async def healthz(request: Request) -> Response:
        trends.maybe_sample()  # probes keep the trend series going
        return _json({"status": "ok", "gateway": gateway_id, "cluster": cluster})

    async def readyz(request: Request) -> Response:
        trends.maybe_sample()
        view = holder.view
        ok = bool(ready())
        body = {
            "ready": ok,
            "gateway": gateway_id,
            "cluster": cluster,
            "view_source": view.source,
            "revision": view.revision,
            "config_revision": view.config_revision,
        }
        return _json(body, 200 if ok else 503)

    async def metrics(request: Request) -> Response:
        trends.maybe_sample()
        # in a worker thread, as the global health: a new view's per-pair families cost
        # O(pairs) once (about 0.3 s at 40,000 pairs) and the event loop keeps its turn
        data = await asyncio.to_thread(telemetry.metrics_text) if telemetry is not None else b""
        return Response(data, media_type=CONTENT_TYPE, headers=_NO_STORE)

    async def health_global(request: Request) -> Response:
        try:
            query = parse_query(request.query_params)
        except QueryError as exc:
            return _error(400, str(exc))
        trends.maybe_sample()
        view, now = holder.view, clock()
        section = dns.summary() if dns is not None else None

        def body() -> bytes:
            return json.dumps(
                global_health(view, now=now, query=query, dns=section),
                ensure_ascii=False,
                allow_nan=False,
                separators=(",", ":"),
            ).encode()

        # at 1,000 clusters the first answer on a new view costs ~0.2 s of CPU: in a
        # thread, so that the event loop (the request path) keeps its turn every 5 ms
        data = await asyncio.to_thread(body)
        return Response(data, media_type="application/json", headers=_NO_STORE)

    async def trend_series(request: Request) -> Response:
        return _json({"gateway": gateway_id, "cluster": cluster, **trends.series()})

    async def gateway_status(request: Request) -> Response:
        view = holder.view
        body: dict[str, Any] = {
            "gateway": gateway_id,
            "cluster": cluster,
            "ready": bool(ready()),
            "view": {
                "revision": view.revision,
                "config_revision": view.config_revision,
                "source": view.source,
                "stale": view.stale,
                "clusters": len(view.clusters),
                "services": len(view.services),
                "gateways": len(view.gateways),
                "rejected": len(view.rejected),
            },
            "details": status(),
        }
        return _json(body)

    async def routes_explain(request: Request) -> Response:
        q = request.query_params
        host = q.get("host", "")
        path = q.get("path", "/")
        method = q.get("method", "GET")
        origin = q.get("from")
        if not host:
            return _error(400, "query parameter 'host' is required")
        if not _HOST.search(host):
            return _error(400, f"invalid host {host!r}")
        if not _PATH.search(path):
            return _error(400, "query parameter 'path' must start with '/'")
        if not _METHOD.search(method):
            return _error(400, f"invalid method {method!r}")
        if origin is not None and origin not in holder.view.clusters:
            return _error(400, f"unknown cluster {origin!r} in 'from'")
        method = method.upper()
        given = q.getlist("header")
        bad = next((h for h in given if not _HEADER.search(h)), None)
        if bad is not None or len(given) > 32:
            return _error(400, f"invalid header {bad!r}: expected NAME:VALUE (at most 32)")
        if given:  # route conditions may look at headers
            pairs = [h.split(":", 1) for h in given]
            headers = [(n.lower(), v.strip()) for n, v in pairs]
            result = dict(explain(host, path, method, origin, headers))
        else:
            result = dict(explain(host, path, method, origin))
        if result.get("error"):
            return _json(result, 400)
        if result.get("route") is None:
            result.setdefault("error", "no registered route for this host and path")
            return _json(result, 404)
        return _json(result)

    async def dns_explain(request: Request) -> Response:
        q = request.query_params
        name = q.get("name", "")
        if dns is None:
            return _error(404, "DNS is not enabled on this gateway (listen.dns)")
        if not name:
            return _error(400, "query parameter 'name' is required")
        if not _HOST.search(name.rstrip(".")):
            return _error(400, f"invalid name {name!r}")
        try:
            return _json(dns.explain(name, q.get("client")))
        except ValueError as exc:
            return _error(400, str(exc))

    async def openapi(request: Request) -> Response:
        return _json(openapi_document(clusters=sorted(holder.view.clusters)))

    async def page(request: Request) -> Response:
        html = (STATIC_DIR / "index.html").read_bytes()
        reason = auth.check(request)
        if reason is not None:
            # the page itself asks for the token: a 401 whose body is the page
            return Response(
                html,
                status_code=401,
                media_type="text/html; charset=utf-8",
                headers={**_PAGE_HEADERS, **auth.challenge(reason)},
            )
        if request.method not in ("GET", "HEAD"):
            return _error(405, "method not allowed", {"Allow": "GET, HEAD"})
        return Response(html, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"])
        if public_metrics
        else Route("/metrics", auth.protect(metrics)),
        Route("/v1/health/global", auth.protect(health_global)),
        Route("/v1/status", auth.protect(gateway_status)),
        Route("/v1/trends", auth.protect(trend_series)),
        Route("/v1/routes/explain", auth.protect(routes_explain)),
        Route("/v1/dns/explain", auth.protect(dns_explain)),
        Route("/openapi.json", auth.protect(openapi)),
        Route("/", _AnyMethod(page)),
        Mount("/static", app=_static_app(), name="static"),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, "not found")

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
        return _error(405, "method not allowed", headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        return _error(500, "internal error")

    return Starlette(
        routes=routes,
        exception_handlers={404: not_found, 405: method_not_allowed, 500: server_error},
    )


def _static_app() -> ASGIApp:
    return _Static()
