"""A whole federation on this machine: etcd, OpenBao, backends and one gateway per cluster.

Each cluster is a distinct loopback address (127.0.0.11, .12, ...), so "regions" are
real separate sockets. :class:`LocalFederation` writes the manifest and every gateway's
settings into its temporary folder, applies the manifest with ``fedgate apply``, starts
the gateways with ``fedgate serve`` and can kill and restore a region's backends or its
gateway. ``close()`` stops every process it started and removes the folder.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from federation.devstack.etcd import EtcdCluster
from federation.devstack.openbao import OpenBao, PkiSetup
from federation.devstack.poll import ProcessExited, stop_process, wait_for
from federation.devstack.ports import free_port

DEMO_HOST = "shop.demo.local"
DEMO_ZONE = "demo.local"


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    cloud: str
    region: str
    tier: int
    address: str  # loopback address of this "region"
    backends: int = 2


DEFAULT_TOPOLOGY: tuple[ClusterSpec, ...] = (
    ClusterSpec("aws-eu-west-1", "aws", "eu-west-1", 0, "127.0.0.11"),
    ClusterSpec("gcp-europe-west4", "gcp", "europe-west4", 0, "127.0.0.12"),
    ClusterSpec("onprem-fra1", "onprem", "fra1", 1, "127.0.0.13"),
)


@dataclass
class Proc:
    name: str
    args: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.popen = subprocess.Popen(
            self.args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        out.close()

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.popen, timeout)

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)


@dataclass
class GatewayInfo:
    cluster: ClusterSpec
    public: int
    east_west: int
    admin: int
    config: Path
    proc: Proc
    dns: int = 0  # the DNS listener's port (UDP and TCP), 0 when off

    @property
    def public_url(self) -> str:
        return f"http://{self.cluster.address}:{self.public}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.cluster.address}:{self.admin}"


@dataclass
class LocalFederation:
    topology: tuple[ClusterSpec, ...] = DEFAULT_TOPOLOGY
    use_vault: bool = True
    lease_ttl: float = 3.0
    health_interval: str = "250ms"
    # each gateway's `telemetry:` settings (the demo keeps the access log off)
    telemetry: dict[str, Any] = field(
        default_factory=lambda: {"logFormat": "json", "accessLog": False}
    )
    base_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fedgate-demo-")))
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    etcd: EtcdCluster | None = None
    vault: OpenBao | None = None
    pki: PkiSetup | None = None
    backends: dict[str, list[Proc]] = field(default_factory=dict)
    backend_ports: dict[str, list[int]] = field(default_factory=dict)
    gateways: dict[str, GatewayInfo] = field(default_factory=dict)
    manifest_path: Path | None = None
    # the federation's authoritative DNS: zone demo.local, each cluster's loopback address
    # as its public entry, a DNS listener in every gateway (`dns:` settings from dns_settings)
    dns: bool = False
    dns_settings: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ start
    def start(self) -> LocalFederation:
        self.etcd = EtcdCluster(size=1, base_dir=self.base_dir / "etcd").start()
        if self.use_vault:
            self.vault = OpenBao(base_dir=self._dir("openbao")).start()
            self.pki = self.vault.configure_pki()
        for spec in self.topology:
            self.backend_ports[spec.name] = [free_port(spec.address) for _ in range(spec.backends)]
            self.backends[spec.name] = [
                Proc(
                    f"{spec.name}-backend-{i}",
                    [
                        sys.executable,
                        "-m",
                        "federation.devstack.backend",
                        "--listen",
                        f"{spec.address}:{port}",
                        "--cluster",
                        spec.name,
                        "--name",
                        f"shop-{i + 1}",
                    ],
                    self.base_dir / f"{spec.name}-backend-{i}.log",
                )
                for i, port in enumerate(self.backend_ports[spec.name])
            ]
            for proc in self.backends[spec.name]:
                proc.start()
            self.gateways[spec.name] = self._gateway(spec)
        for spec in self.topology:
            self.wait_backends(spec.name)
        self.manifest_path = self.base_dir / "federation.yaml"
        self.manifest_path.write_text(yaml.safe_dump(self.manifest(), sort_keys=False))
        self.fedgate("apply", str(self.manifest_path), "--etcd", self.etcd.endpoint)
        for gw in self.gateways.values():
            gw.proc.start(env=self._env())
        for name in self.gateways:
            self.wait_ready(name)
        return self

    def _dir(self, name: str) -> Path:
        path = self.base_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["FEDGATE_ADMIN_TOKEN"] = self.admin_token
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _gateway(self, spec: ClusterSpec) -> GatewayInfo:
        public, east_west, admin = (free_port(spec.address) for _ in range(3))
        dns_port = free_port(spec.address) if self.dns else 0
        config = self.base_dir / f"gateway-{spec.name}.yaml"
        assert self.etcd is not None
        settings: dict[str, Any] = {
            "cluster": spec.name,
            "id": f"{spec.name}-gw-1",
            "listen": {
                "public": f"{spec.address}:{public}",
                "eastWest": f"{spec.address}:{east_west}",
                "admin": f"{spec.address}:{admin}",
            },
            "etcd": {"endpoints": [self.etcd.endpoint], "leaseTtl": f"{self.lease_ttl:g}s"},
            "snapshot": str(self.base_dir / f"view-{spec.name}.json"),
            "telemetry": self.telemetry,
            "limits": {"drainTimeout": "2s"},
        }
        if dns_port:
            settings["listen"]["dns"] = f"{spec.address}:{dns_port}"
            settings["dns"] = self.dns_settings
        if self.pki is not None and self.vault is not None:
            settings["vault"] = {
                "addr": self.vault.addr,
                "auth": {"method": "token", "token": self.pki.gateway_token},
                "pki": {
                    "mount": self.pki.mount,
                    "role": self.pki.role,
                    "trustDomain": self.pki.trust_domain,
                    "serverNames": [DEMO_HOST, spec.address],
                    "ttl": "1h",
                },
            }
        else:
            settings["insecureEastWest"] = True
        config.write_text(yaml.safe_dump(settings, sort_keys=False))
        proc = Proc(
            f"{spec.name}-gateway",
            [sys.executable, "-m", "federation.cli", "serve", "--config", str(config)],
            self.base_dir / f"gateway-{spec.name}.log",
        )
        return GatewayInfo(spec, public, east_west, admin, config, proc, dns_port)

    def manifest(self) -> dict[str, Any]:
        scheme = "https" if self.use_vault else "http"
        clusters = [
            {
                "name": spec.name,
                "region": spec.region,
                "cloud": spec.cloud,
                "environment": "demo",
                "tier": spec.tier,
                "gateway": {
                    "eastWest": f"{scheme}://{spec.address}:{self.gateways[spec.name].east_west}"
                },
                "labels": {"site": spec.region},
            }
            for spec in self.topology
        ]
        if self.dns:
            for c, spec in zip(clusters, self.topology, strict=True):
                c["publicEntry"] = {"addresses": [spec.address]}
        doc: dict[str, Any] = {
            "apiVersion": "fedgate/v1",
            "kind": "Federation",
            "metadata": {"name": "fedgate-demo"},
            "clusters": clusters,
            "services": [
                {
                    "name": "shop",
                    "routes": [{"host": DEMO_HOST, "pathPrefix": "/"}],
                    "port": 8080,
                    "clusters": [spec.name for spec in self.topology],
                    "endpoints": {
                        spec.name: [f"{spec.address}:{p}" for p in self.backend_ports[spec.name]]
                        for spec in self.topology
                    },
                    "healthCheck": {
                        "path": "/healthz",
                        "interval": self.health_interval,
                        "timeout": "200ms",
                        "healthyAfter": 2,
                        "unhealthyAfter": 2,
                    },
                    "failover": {"policy": "healthiest", "failbackWindow": "5s"},
                    "retries": {
                        "attempts": 2,
                        "perTryTimeout": "1s",
                        "budgetPercent": 50,
                        "on": ["connect-failure", "reset", "502", "503", "504"],
                    },
                    "circuitBreaker": {
                        "maxPending": 1024,
                        "consecutiveFailures": 5,
                        "openFor": "5s",
                    },
                }
            ],
        }
        if self.dns:
            doc["zones"] = [{"name": DEMO_ZONE, "negativeTtl": "1s"}]
            doc["services"][0]["dns"] = {"strategy": "healthiest", "ttl": "1s"}
        return doc

    # ------------------------------------------------------------------ control
    def fedgate(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "federation.cli", *args],
            capture_output=True,
            text=True,
            env=self._env(),
            timeout=60,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"fedgate {' '.join(args[:1])} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result

    def admin_get(self, cluster: str, path: str, timeout: float = 2.0) -> Any:
        gw = self.gateways[cluster]
        req = urllib.request.Request(
            gw.admin_url + path, headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def wait_ready(self, cluster: str, timeout: float = 30.0) -> None:
        gw = self.gateways[cluster]

        def ready() -> bool:
            if not gw.proc.running:
                tail = (
                    gw.proc.log.read_text(errors="replace")[-2000:] if gw.proc.log.exists() else ""
                )
                raise ProcessExited(f"gateway {cluster} exited:\n{tail}")
            try:
                with urllib.request.urlopen(gw.admin_url + "/readyz", timeout=1) as r:
                    return bool(r.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        wait_for(ready, timeout=timeout, interval=0.1, what=f"gateway {cluster} ready")

    def wait_backends(self, cluster: str, timeout: float = 30.0) -> None:
        """Every backend of ``cluster`` accepts connections (a gateway started before
        would probe them down and route its first requests to another cluster)."""
        address = next(spec.address for spec in self.topology if spec.name == cluster)

        def listening() -> bool:
            for port in self.backend_ports[cluster]:
                with socket.create_connection((address, port), timeout=1):
                    pass
            return True

        wait_for(listening, timeout=timeout, interval=0.05, what=f"backends of {cluster} listening")

    def kill_backends(self, cluster: str) -> None:
        for proc in self.backends[cluster]:
            proc.kill()

    def restore_backends(self, cluster: str) -> None:
        for proc in self.backends[cluster]:
            if not proc.running:
                proc.start()

    def kill_gateway(self, cluster: str) -> None:
        self.gateways[cluster].proc.kill()

    def restart_gateway(self, cluster: str) -> None:
        gw = self.gateways[cluster]
        gw.proc.stop()
        gw.proc.start(env=self._env())
        self.wait_ready(cluster)

    # ------------------------------------------------------------------ stop
    def close(self) -> None:
        for gw in self.gateways.values():
            gw.proc.signal(signal.SIGTERM)
        for gw in self.gateways.values():
            gw.proc.stop(timeout=10)
        for procs in self.backends.values():
            for proc in procs:
                proc.stop(timeout=5)
        if self.vault is not None:
            self.vault.close()
        if self.etcd is not None:
            self.etcd.close()
        if os.environ.get("FEDGATE_KEEP_TMP") != "1":
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> LocalFederation:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
