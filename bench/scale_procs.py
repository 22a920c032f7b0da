"""The processes ``bench/scale.py`` watches besides its own: etcd's database size over
time (and the operator's defragmentation), and a real ``fedgate serve`` (``--real-gateway``)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any


class DbStatus:
    """etcd's database size over time, from its status endpoint; the operator's defrag."""

    def __init__(self, endpoint: str) -> None:
        self.target = endpoint.split("://", 1)[-1]
        # (seconds into the churn, dbSize, dbSizeInUse, revision) in bytes
        self.series: list[tuple[float, int, int, int]] = []
        self.defrags: list[tuple[float, float]] = []  # (when, seconds it took)

    async def _call(self, method: str, request: Any) -> Any:
        import aetcd.rpc as rpc
        import grpc

        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = rpc.MaintenanceStub(channel)
            return await getattr(stub, method)(request, timeout=60)

    async def sample(self, at: float) -> None:
        import aetcd.rpc as rpc

        r = await self._call("Status", rpc.StatusRequest())
        self.series.append((at, int(r.dbSize), int(r.dbSizeInUse), int(r.header.revision)))

    async def defragment(self, at: float) -> None:
        import aetcd.rpc as rpc

        started = time.monotonic()
        await self._call("Defragment", rpc.DefragmentRequest())
        self.defrags.append((at, time.monotonic() - started))
        await self.sample(at)


class RealGateway:
    """A real ``fedgate serve`` of one cluster (``--real-gateway``): its CPU, RSS, leases."""

    def __init__(self, base: Path, cluster: str, endpoints: list[str]) -> None:
        import secrets
        import subprocess

        import yaml

        from federation.devstack.ports import free_port

        self.admin = free_port()
        self.log = base / "gateway.log"
        settings = {
            "cluster": cluster,
            "id": "real-gw",
            "listen": {
                "public": f"127.0.0.1:{free_port()}",
                "eastWest": f"127.0.0.1:{free_port()}",
                "admin": f"127.0.0.1:{self.admin}",
            },
            "etcd": {"endpoints": endpoints},
            "snapshot": str(base / "real-gw-view.json"),
            "insecureEastWest": True,
            "telemetry": {"accessLog": False},
        }
        config = base / "gateway.yaml"
        config.write_text(yaml.safe_dump(settings))
        env = {**os.environ, "FEDGATE_ADMIN_TOKEN": secrets.token_urlsafe(16)}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "federation.cli", "serve", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.started = time.monotonic()
        self.ready_after = float("nan")
        self.cpu0 = 0.0
        self.t0 = 0.0

    def ready(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/readyz", timeout=1) as r:
                ok = bool(r.status == 200)
        except OSError:
            return False
        if ok and self.ready_after != self.ready_after:
            self.ready_after = time.monotonic() - self.started
        return ok

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def start_churn(self) -> None:
        self.cpu0, self.t0 = self.cpu(), time.monotonic()

    def report(self) -> dict[str, float]:
        cpu = (self.cpu() - self.cpu0) / max(1e-9, time.monotonic() - self.t0)
        expiries = self.log.read_text(errors="replace").count("expired; granting a new one")
        return {
            "cpu": cpu * 100,
            "rss": self.rss_mb(),
            "leases": expiries,
            "ready": self.ready_after,
        }

    def stop(self) -> None:
        from federation.devstack.poll import stop_process

        stop_process(self.proc)
