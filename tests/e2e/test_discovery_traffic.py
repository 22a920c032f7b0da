"""The gateway's traffic follows Kubernetes: a real `fedgate serve` process discovers its
pods from the API-server double (through a kubeconfig context), writes them to real
etcd, and sends requests only to the pods that are ready."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from federation.etcd import EtcdClient
from federation.keys import KeyLayout
from federation.view import load_view
from tests.support.backend import Backend
from tests.support.etcd import EtcdCluster
from tests.support.kube_api import KubeApiServer
from tests.support.ports import free_port
from tests.support.wait import async_wait_for, wait_for

REPO = Path(__file__).resolve().parents[2]
CLUSTER = "aws-eu-west-1"
HOST = "shop.k8s.test"
GATEWAY = "127.0.0.41"
PODS = ("127.0.0.51", "127.0.0.52", "127.0.0.53")
TOKEN = "e2e-admin-token-0123456789"

pytestmark = pytest.mark.slow


def common_port(hosts: tuple[str, ...]) -> int:
    """A port free on every one of ``hosts`` (pods share the Service's port)."""
    for _ in range(50):
        port = free_port(hosts[0])
        ok = True
        for h in hosts[1:]:
            with socket.socket() as s:
                try:
                    s.bind((h, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError("no common free port")


def run_cli(*args: str, env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "federation.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@contextlib.contextmanager
def gateway_process(config: Path, env: dict[str, str], log: Path) -> Iterator[Any]:
    out = open(log, "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "federation.cli", "serve", "--config", str(config)],
        cwd=REPO,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    out.close()
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def served_by(client: httpx.AsyncClient, url: str, n: int = 20) -> set[str]:
    seen: set[str] = set()
    for _ in range(n):
        r = await client.get(url, headers={"host": HOST})
        seen.add(r.headers.get("x-backend", f"status {r.status_code}"))
    return seen


async def test_traffic_follows_the_pods(etcd: EtcdCluster, tmp_path: Path) -> None:
    port = common_port(PODS)
    public, east_west, admin = (free_port(GATEWAY) for _ in range(3))
    with KubeApiServer(host="127.0.0.42") as kube:
        kube.add_service("shop", "shop", ports=[("http", port)])
        pod_a = kube.add_pod("shop", "shop", ip=PODS[0], zone="eu-west-1a")

        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "double", "cluster": {"server": kube.url}}],
                    "users": [{"name": "gw", "user": {"token": "not-checked"}}],
                    "contexts": [
                        {"name": "double", "context": {"cluster": "double", "user": "gw"}}
                    ],
                    "current-context": "double",
                }
            )
        )
        manifest = tmp_path / "federation.yaml"
        manifest.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "fedgate/v1",
                    "kind": "Federation",
                    "metadata": {"name": "k8s-e2e"},
                    "clusters": [
                        {
                            "name": CLUSTER,
                            "region": "eu-west-1",
                            "cloud": "aws",
                            "gateway": {"eastWest": f"http://{GATEWAY}:{east_west}"},
                            "kubernetes": {"namespaces": ["shop"], "context": "double"},
                        }
                    ],
                    "services": [
                        {
                            "name": "shop",
                            "routes": [{"host": HOST}],
                            "port": port,
                            "clusters": [CLUSTER],
                            "healthCheck": {
                                "path": "/healthz",
                                "interval": "250ms",
                                "timeout": "200ms",
                                "healthyAfter": 1,
                                "unhealthyAfter": 2,
                            },
                        }
                    ],
                },
                sort_keys=False,
            )
        )
        config = tmp_path / "gateway.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "cluster": CLUSTER,
                    "id": f"{CLUSTER}-gw-1",
                    "listen": {
                        "public": f"{GATEWAY}:{public}",
                        "eastWest": f"{GATEWAY}:{east_west}",
                        "admin": f"{GATEWAY}:{admin}",
                    },
                    "etcd": {"endpoints": etcd.endpoints, "leaseTtl": "2s"},
                    "snapshot": str(tmp_path / "view.json"),
                    "insecureEastWest": True,
                    "telemetry": {"logFormat": "json", "accessLog": False},
                    "limits": {"drainTimeout": "1s"},
                }
            )
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("FEDGATE_", "KUBERNETES_SERVICE"))
        }
        env.update(
            {"KUBECONFIG": str(kubeconfig), "FEDGATE_ADMIN_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
        )
        run_cli("apply", str(manifest), "--etcd", etcd.endpoint, env=env)

        backends = [Backend(name, host=ip, port=port) for name, ip in zip("ABC", PODS, strict=True)]
        async with contextlib.AsyncExitStack() as stack:
            for b in backends:
                await stack.enter_async_context(b)
            log = tmp_path / "gateway.log"
            proc = stack.enter_context(gateway_process(config, env, log))

            def ready() -> bool:
                assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
                try:
                    with urllib.request.urlopen(f"http://{GATEWAY}:{admin}/readyz", timeout=1) as r:
                        return bool(r.status == 200)
                except OSError:
                    return False

            await asyncio.to_thread(wait_for, ready, timeout=30, interval=0.1, what="ready")
            url = f"http://{GATEWAY}:{public}/"
            etcd_client = EtcdClient(etcd.endpoints)
            await etcd_client.connect()
            stack.push_async_callback(etcd_client.close)
            client = await stack.enter_async_context(httpx.AsyncClient(timeout=5.0))

            async def traffic_goes_to(expected: set[str], what: str) -> None:
                async def check() -> bool:
                    return await served_by(client, url) == expected

                try:
                    await async_wait_for(check, timeout=30, interval=0.2, what=what)
                except AssertionError:
                    print(log.read_text(errors="replace")[-4000:])
                    raise

            async def view_matches() -> bool:
                """load_view (what every gateway builds) holds the double's endpoints."""
                view = await load_view(etcd_client, KeyLayout())
                got = {
                    (e.address, e.routable)
                    for e in view.endpoints_of("shop", CLUSTER)
                    if e.source != "static"
                }
                want = {
                    (f"{e['ip']}:{port}", e["ready"] and e["serving"] and not e["terminating"])
                    for e in kube.endpoints("shop", "shop")
                }
                return got == want

            await traffic_goes_to({"A"}, "traffic on pod A only")
            await async_wait_for(view_matches, timeout=15, what="view = API server")

            # scale up: a second pod takes traffic
            pod_b = kube.add_pod("shop", "shop", ip=PODS[1], zone="eu-west-1b")
            await traffic_goes_to({"A", "B"}, "traffic on pods A and B")
            await async_wait_for(view_matches, timeout=15, what="view = API server")

            # pod A turns unready: it gets nothing more
            kube.set_pod("shop", pod_a, ready=False, serving=False)
            await traffic_goes_to({"B"}, "traffic on pod B only")

            # B terminates (drains) while C starts: C only
            kube.add_pod("shop", "shop", ip=PODS[2], zone="eu-west-1c")
            kube.terminate_pod("shop", pod_b)
            await traffic_goes_to({"C"}, "traffic on pod C only")
            await async_wait_for(view_matches, timeout=15, what="view = API server")

            # the API server restarts and forgets its history; A comes back
            kube.restart(compact=True)
            kube.set_pod("shop", pod_a, ready=True, serving=True)
            await traffic_goes_to({"A", "C"}, "traffic on pods A and C")
            await async_wait_for(view_matches, timeout=15, what="view = API server")
