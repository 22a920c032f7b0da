"""A real admin API server (uvicorn in a thread) for the CLI and status page tests."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Any

import uvicorn

from federation.api import create_admin_app
from gateway.telemetry import Telemetry
from gateway.types import ViewHolder
from tests.support.ports import free_port
from tests.support.wait import wait_for


class AdminServer:
    """``with AdminServer(holder, token) as s: s.url`` -- stops the server on exit."""

    def __init__(
        self,
        holder: ViewHolder,
        token: str,
        *,
        host: str = "127.0.0.1",
        explain: Any = None,
        trends: Any = None,
    ) -> None:
        self.holder = holder
        self.token = token
        self.host = host
        self.port = free_port(host)
        self.app = create_admin_app(
            holder=holder,
            token=token,
            gateway_id="gw-test",
            cluster="aws-eu-west-1",
            telemetry=Telemetry(gateway_id="gw-test", cluster="aws-eu-west-1", access_log=False),
            explain=explain or (lambda host, path, method, origin: {"revision": 0, "route": None}),
            ready=lambda: True,
            status=dict,
            trends=trends,
        )
        config = uvicorn.Config(
            self.app, host=host, port=self.port, log_level="warning", lifespan="off",
            loop="asyncio",
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> AdminServer:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=15, what="admin server started")
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
