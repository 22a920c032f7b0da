"""The dependencies as declared: lower bounds that import, and the uvicorn internals that
``gateway/protocol.py`` subclasses (private APIs: pyproject caps uvicorn below the next
minor release; this test says what to check before raising the cap)."""

from __future__ import annotations

import asyncio
import inspect
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = {}
    for req in project["dependencies"]:
        name = re.split(r"[\[<>=!~ ;]", req, maxsplit=1)[0].lower()
        out[name] = req
    return out


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def test_runtime_imports_are_declared() -> None:
    """Every third-party package imported by gateway/ and federation/ is a dependency."""
    declared = set(_requirements())
    modules = {
        "websockets": "websockets",
        "requests": "requests",
        "uvicorn": "uvicorn",
        "starlette": "starlette",
        "httptools": "httptools",
        "aetcd": "aetcd",
        "hvac": "hvac",
        "ruamel": "ruamel.yaml",
        "yaml": "pyyaml",
        "pydantic": "pydantic",
        "cryptography": "cryptography",
        "structlog": "structlog",
        "prometheus_client": "prometheus-client",
        "kubernetes": "kubernetes",
    }
    imported: set[str] = set()
    pattern = re.compile(r"^\s*(?:from|import)\s+([a-z_]+)", re.M)
    for path in [*ROOT.glob("gateway/*.py"), *ROOT.glob("federation/**/*.py")]:
        imported |= set(pattern.findall(path.read_text()))
    for module, dist in modules.items():
        if module in imported:
            assert dist in declared, f"{module} is imported but {dist} is not a dependency"


@pytest.mark.parametrize("dist", sorted(_requirements()))
def test_installed_versions_satisfy_the_lower_bounds(dist: str) -> None:
    req = _requirements()[dist]
    lower = re.search(r">=\s*([\d.]+)", req)
    upper = re.search(r"<\s*([\d.]+)", req)
    name = "ruamel.yaml" if dist == "ruamel.yaml" else dist
    installed = _version(metadata.version(name))
    if lower:
        assert installed >= _version(lower.group(1)), f"{dist} {installed} below {req}"
    if upper:
        assert installed < _version(upper.group(1)), f"{dist} {installed} not below {req}"


def test_uvicorn_internals_that_gateway_protocol_relies_on() -> None:
    """Module paths, base classes, the names our subclasses call or override, the cycle's
    constructor and attributes, and the protocol attributes set by uvicorn's __init__."""
    import uvicorn
    from uvicorn.protocols.http import httptools_impl
    from uvicorn.protocols.http.flow_control import service_unavailable
    from uvicorn.protocols.websockets import websockets_sansio_impl
    from uvicorn.server import ServerState

    assert callable(service_unavailable)
    assert httptools_impl.STATUS_LINE[200].startswith(b"HTTP/1.1 200")
    proto = httptools_impl.HttpToolsProtocol
    for name in (
        "connection_made", "connection_lost", "data_received", "on_message_begin", "on_url",
        "on_header", "on_headers_complete", "on_response_complete", "send_400_response",
        "shutdown", "handle_websocket_upgrade", "_should_upgrade",
    ):  # fmt: skip
        assert callable(getattr(proto, name, None)), f"HttpToolsProtocol.{name} is gone"
    assert callable(websockets_sansio_impl.WebSocketsSansIOProtocol.handle_connect)

    params = set(inspect.signature(httptools_impl.RequestResponseCycle.__init__).parameters)
    assert {
        "scope", "transport", "flow", "logger", "access_logger", "access_log",
        "default_headers", "message_event", "expect_100_continue", "keep_alive", "on_response",
    } <= params, params  # fmt: skip

    async def build() -> None:
        async def app(scope: object, receive: object, send: object) -> None:
            return None

        config = uvicorn.Config(app=app, http="httptools", lifespan="off")
        config.load()
        state = ServerState()
        p = proto(config=config, server_state=state, app_state={})
        for attr in (
            "loop", "logger", "access_logger", "access_log", "parser", "app", "server_state",
            "connections", "tasks", "limit_concurrency", "pipeline",
            "scope", "headers", "cycle", "flow", "transport", "server", "client", "scheme",
        ):  # fmt: skip
            # the last five are set in connection_made: present on the class or instance later
            late = {"flow", "transport", "server", "client", "scheme"}
            assert hasattr(p, attr) or attr in late, f"HttpToolsProtocol().{attr} is gone"
        assert hasattr(state, "total_requests") and hasattr(state, "default_headers")
        cycle = httptools_impl.RequestResponseCycle(
            scope={"method": "GET", "type": "http"}, transport=None, flow=None,
            logger=p.logger, access_logger=p.access_logger, access_log=False,
            default_headers=[], message_event=asyncio.Event(), expect_100_continue=False,
            keep_alive=True, on_response=lambda: None,
        )  # type: ignore[arg-type]  # fmt: skip
        for attr in (
            "flow", "disconnected", "response_started", "waiting_for_100_continue",
            "chunked_encoding", "expected_content_length", "keep_alive", "scope",
            "response_complete", "message_event", "transport", "on_response", "more_body",
            "body",
        ):  # fmt: skip
            assert hasattr(cycle, attr), f"RequestResponseCycle.{attr} is gone"

    asyncio.run(build())
