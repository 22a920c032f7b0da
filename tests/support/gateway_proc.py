"""A real gateway process for tests: ``fedgate serve --config <tmp yaml>``.

::

    with GatewayProcess(settings={...}, manifest=MANIFEST_YAML) as gw:
        gw.url("public"), gw.url("admin"), gw.pid, gw.rss()
        gw.terminate()          # SIGTERM: graceful drain; gw.wait() -> exit code

``settings`` is the gateway.yaml content as a dict (``cluster`` is required); listeners
default to free ports on ``host``; ``manifest`` (YAML text), when given, is written next
to the config and used as the view source (``manifest:``, development mode without
etcd). The process is started with its own session and always stopped (SIGTERM, then
SIGKILL) on exit; its output goes to ``log_path``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from federation.devstack.poll import ProcessExited, stop_process
from tests.support.ports import free_ports
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]


class GatewayProcess:
    def __init__(
        self,
        *,
        settings: dict[str, Any],
        manifest: str | None = None,
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        ready_timeout: float = 30.0,
        cpu: int | None = None,
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fedgate-gw-"))
        self.host = host
        self.settings = json.loads(json.dumps(settings))
        listen = self.settings.setdefault("listen", {})
        ports = free_ports(3, host)
        listen.setdefault("public", f"{host}:{ports[0]}")
        listen.setdefault("admin", f"{host}:{ports[1]}")
        listen.setdefault("eastWest", f"{host}:{ports[2]}")
        if manifest is not None:
            path = self.dir / "manifest.yaml"
            path.write_text(manifest)
            self.settings["manifest"] = str(path)
        self.config_path = self.dir / "gateway.yaml"
        self.config_path.write_text(yaml.safe_dump(self.settings))
        self.log_path = self.dir / "gateway.log"
        self.env = env or {}
        self.ready_timeout = ready_timeout
        self.cpu = cpu
        self.proc: subprocess.Popen[bytes] | None = None

    def address(self, listener: str) -> tuple[str, int]:
        key = {"east_west": "eastWest", "public_tls": "publicTls"}.get(listener, listener)
        host, _, port = self.settings["listen"][key].rpartition(":")
        return host, int(port)

    def url(self, listener: str = "public") -> str:
        host, port = self.address(listener)
        return f"http://{host}:{port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> GatewayProcess:
        fedgate = Path(sys.executable).parent / "fedgate"  # the console script of the venv
        cmd = [str(fedgate), "serve", "--config", str(self.config_path)]
        if self.cpu is not None:
            cmd = ["taskset", "-c", str(self.cpu), *cmd]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), **self.env},
        )
        log.close()
        try:
            wait_for(self._ready, timeout=self.ready_timeout, interval=0.05, what="gateway ready")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise ProcessExited(f"gateway exited with {self.proc.returncode}: {self.log()[-2000:]}")
        with urllib.request.urlopen(self.url("admin") + "/readyz", timeout=1) as r:
            return bool(r.status == 200)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def rss(self) -> int:
        """Resident set size of the gateway process in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        stop_process(self.proc)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def manifest_yaml(
    *,
    services: list[dict[str, Any]],
    clusters: list[dict[str, Any]] | None = None,
    name: str = "test",
) -> str:
    """A manifest (YAML text) with defaults for the fields tests rarely care about."""
    cl = clusters or [
        {
            "name": "c1",
            "region": "r1",
            "cloud": "other",
            "environment": "test",
            "gateway": {"eastWest": "http://127.0.0.1:9"},
        }
    ]
    return yaml.safe_dump(
        {
            "apiVersion": "fedgate/v1",
            "kind": "Federation",
            "metadata": {"name": name},
            "clusters": cl,
            "services": services,
        },
        sort_keys=False,
    )
