"""HTTP/2 and gRPC through fedgate, nginx and Caddy, side by side in one run, h2load as
the client.

    .venv/bin/python bench/proxy_h2.py [--protocol h2|grpc|both] [--duration 10]
        [--connections 8] [--streams 16] [--targets fedgate,nginx,caddy]

Set-up (shares bench/proxy.py's process handling, CPU pinning and CPU accounting):

* **backend**: nginx, one worker, pinned with the load generator on CPU 1.
  ``h2``: HTTP/1.1 keep-alive, ``return 200`` (the proxies terminate HTTP/2 from the
  client and speak HTTP/1.1 upstream: this measures the HTTP/2 server side).
  ``grpc``: HTTP/2 cleartext (h2c), ``content-type: application/grpc``, a 10-byte body
  and a ``grpc-status: 0`` trailer (the proxies speak HTTP/2 both ways and carry the
  trailer: fedgate with ``protocol: grpc``, nginx with ``grpc_pass``, Caddy with
  ``reverse_proxy h2c://``).
* **proxies** pinned to CPU 0, one worker/thread each: fedgate (``fedgate serve``,
  metrics on, access log and tracing off), nginx (``listen ... http2``), Caddy
  (``protocols h1 h2c``, ``GOMAXPROCS=1``).
* **load**: ``h2load -c CONNECTIONS -m STREAMS -D DURATION`` (prior knowledge), pinned
  to CPU 1; gRPC calls are POSTs of one 5-byte message with ``te: trailers``.

Printed per target: requests/s, requests per CPU second of the proxy, failed requests.
The machine is shared: compare the ratios within one run, not absolute figures.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.proxy import (  # noqa: E402
    BACKEND_HOST,
    HOST,
    LOAD_CPU,
    PROXY_CPU,
    Procs,
    group_cpu,
    nginx_conf,
)
from tests.support.ports import free_port  # noqa: E402

GRPC_BODY = b"\x00\x00\x00\x00\x05hello"  # one length-prefixed message


def backend(procs: Procs, tmp: Path, protocol: str) -> str:
    port = free_port(BACKEND_HOST)
    if protocol == "grpc":
        server = f"""
  server {{
    listen {BACKEND_HOST}:{port} http2;
    keepalive_requests 10000000;
    location / {{
      default_type application/grpc;
      add_trailer grpc-status 0 always;
      return 200 "\\x00\\x00\\x00\\x00\\x05hello";
    }}
  }}"""
    else:
        server = f"""
  server {{
    listen {BACKEND_HOST}:{port};
    location / {{ return 200 "hello from the backend\\n"; }}
  }}"""
    conf = nginx_conf(tmp, "backend", server)
    procs.start(["nginx", "-c", str(conf)], cpu=LOAD_CPU, log=tmp / "backend.log")
    _wait_port(BACKEND_HOST, port)
    return f"{BACKEND_HOST}:{port}"


def _wait_port(host: str, port: int, timeout: float = 15.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)  # poll under a deadline
    raise RuntimeError(f"{host}:{port} did not listen")


def proxy(name: str, procs: Procs, tmp: Path, upstream: str, protocol: str) -> tuple[str, int]:
    """Start one proxy; returns (URL to load, its process group)."""
    port = free_port(HOST)
    log = tmp / f"{name}-{protocol}.log"
    grpc = protocol == "grpc"
    if name == "nginx":
        if grpc:
            location = "grpc_pass grpc://up; grpc_set_header Host $host;"
        else:
            location = ('proxy_pass http://up; proxy_http_version 1.1; '
                        'proxy_set_header Connection ""; proxy_set_header Host $host;')  # fmt: skip
        conf = nginx_conf(tmp, f"proxy-nginx-{protocol}", f"""
  upstream up {{ server {upstream}; keepalive 64; }}
  server {{
    listen {HOST}:{port} http2;
    keepalive_requests 10000000;
    location / {{ {location} }}
  }}""")  # fmt: skip
        p = procs.start(["nginx", "-c", str(conf)], cpu=PROXY_CPU, log=log)
    elif name == "caddy":
        conf = tmp / f"Caddyfile-{protocol}"
        to = f"h2c://{upstream}" if grpc else upstream
        conf.write_text(f"""
{{
  admin off
  auto_https off
  servers {{
    protocols h1 h2c
  }}
}}
http://:{port} {{
  bind {HOST}
  reverse_proxy {to}
}}
""")
        p = procs.start(
            ["caddy", "run", "--config", str(conf), "--adapter", "caddyfile"],
            cpu=PROXY_CPU, log=log,
            env={"GOMAXPROCS": "1", "XDG_DATA_HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp)},
        )  # fmt: skip
    elif name == "fedgate":
        manifest = tmp / f"manifest-{protocol}.yaml"
        manifest.write_text(f"""
apiVersion: fedgate/v1
kind: Federation
metadata: {{name: bench}}
clusters:
  - {{name: c1, region: r1, cloud: other, environment: bench,
     gateway: {{eastWest: "http://127.0.0.1:9"}}}}
services:
  - name: bench
    routes: [{{host: bench.test, pathPrefix: /}}]
    port: 80
    clusters: [c1]
    endpoints: {{c1: ["{upstream}"]}}
    protocol: {"grpc" if grpc else "http"}
""")
        config = tmp / f"gateway-{protocol}.yaml"
        config.write_text(f"""
cluster: c1
listen: {{public: "{HOST}:{port}", eastWest: null, admin: "{HOST}:{free_port(HOST)}"}}
manifest: {manifest}
telemetry: {{accessLog: false, metrics: true, tracing: {{enabled: false}}}}
""")
        fedgate = str(Path(sys.executable).parent / "fedgate")
        p = procs.start([fedgate, "serve", "--config", str(config)], cpu=PROXY_CPU, log=log)
    else:
        raise SystemExit(f"unknown target {name}")
    try:
        _wait_port(HOST, port)
    except RuntimeError:
        print(log.read_text()[-2000:], file=sys.stderr)
        raise
    time.sleep(0.3)  # let the process finish starting before the clock runs
    return f"http://{HOST}:{port}/bench.Echo/Call", p.pid


def h2load(url: str, protocol: str, *, duration: int, connections: int, streams: int,
           tmp: Path) -> tuple[float, int, int]:  # fmt: skip
    """(requests/s, succeeded, failed) of one h2load run on the load CPU."""
    cmd = ["taskset", "-c", LOAD_CPU, "h2load", "-c", str(connections), "-m", str(streams),
           "-D", str(duration), "-H", ":authority: bench.test"]  # fmt: skip
    if protocol == "grpc":
        data = tmp / "grpc-body"
        data.write_bytes(GRPC_BODY)
        cmd += ["-d", str(data), "-H", "content-type: application/grpc", "-H", "te: trailers"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True,
                         timeout=duration + 60).stdout  # fmt: skip
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    r = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out)
    if m is None or r is None:
        raise RuntimeError(f"h2load output not understood:\n{out}")
    if int(r.group(2)):
        print(out[-1200:])
    return float(m.group(1)), int(r.group(1)), int(r.group(2))


def profile_summary(raw: Path) -> str:
    """py-spy's raw stacks -> the share of samples spent inside each package
    (inclusive) and the top leaf functions."""
    groups = ("(h2/", "(hpack/", "(hyperframe/", "gateway/h2/server", "gateway/h2/client",
              "gateway/h2/forward", "gateway/app", "gateway/telemetry", "(asyncio/")  # fmt: skip
    inclusive = dict.fromkeys(groups, 0)
    leaves: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        count = int(n)
        total += count
        for g in groups:
            if g in stack:
                inclusive[g] += count
        leaf = stack.split(";")[-1]
        leaves[leaf] = leaves.get(leaf, 0) + count
    total = max(total, 1)
    out = ["inclusive: " + ", ".join(f"{g} {n * 100 / total:.0f}%" for g, n in inclusive.items())]
    for leaf, n in sorted(leaves.items(), key=lambda kv: -kv[1])[:12]:
        out.append(f"  {n * 100 / total:5.1f}%  {leaf}")
    return "\n".join(out)


def run(protocol: str, targets: list[str], args: argparse.Namespace, tmp: Path) -> None:
    procs = Procs()
    try:
        upstream = backend(procs, tmp, protocol)
        rows = []
        for name in targets:
            url, pgid = proxy(name, procs, tmp, upstream, protocol)
            # warm-up (connections, pools), then the measured run
            h2load(url, protocol, duration=1, connections=args.connections,
                   streams=args.streams, tmp=tmp)  # fmt: skip
            spy = None
            if args.profile and name == "fedgate":
                spy = subprocess.Popen(
                    [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pgid),
                     "-d", str(args.duration), "-r", "250", "-f", "raw",
                     "-o", str(tmp / "profile.txt"), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            cpu0 = group_cpu(pgid)
            rps, ok, failed = h2load(url, protocol, duration=args.duration,
                                     connections=args.connections, streams=args.streams,
                                     tmp=tmp)  # fmt: skip
            cpu = group_cpu(pgid) - cpu0
            if spy is not None:
                spy.wait(timeout=60)
                print(profile_summary(tmp / "profile.txt"))
            if failed:
                log = tmp / f"{name}-{protocol}.log"
                print(f"{name}: {failed} failed; its log ends with:\n{log.read_text()[-1500:]}")
            rows.append((name, rps, ok / cpu if cpu > 0 else 0.0, cpu, failed))
            procs.stop(procs.procs[-1])
        fed = next((r for r in rows if r[0] == "fedgate"), None)
        print(f"\n### {protocol}: h2load -c {args.connections} -m {args.streams} "
              f"-D {args.duration}, load {os.getloadavg()[0]:.2f}\n")  # fmt: skip
        print("| proxy | req/s | req per CPU-s | CPU s | failed | fedgate / this (per CPU-s) |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name, rps, per_cpu, cpu, failed in rows:
            ratio = f"{fed[2] / per_cpu:.2f}x" if fed is not None and per_cpu else "-"
            print(f"| {name} | {rps:,.0f} | {per_cpu:,.0f} | {cpu:.1f} | {failed} | {ratio} |")
    finally:
        procs.stop_all()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", choices=["h2", "grpc", "both"], default="both")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--targets", default="fedgate,nginx,caddy")
    ap.add_argument("--profile", action="store_true", help="py-spy on fedgate's measured run")
    args = ap.parse_args()
    for tool in ("h2load", "nginx", "caddy", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing (h2load: apt-get install nghttp2-client)", file=sys.stderr)
            return 2
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    protocols = ["h2", "grpc"] if args.protocol == "both" else [args.protocol]
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="fedgate-bench-h2-") as d:
        for protocol in protocols:
            run(protocol, targets, args, Path(d))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
