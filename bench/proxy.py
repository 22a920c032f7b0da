"""fedgate against nginx, HAProxy and Caddy as reverse proxies, side by side in one run.

    .venv/bin/python bench/proxy.py [--duration 10] [--connections 50]
        [--targets direct,fedgate,nginx,haproxy,caddy] [--profile]
        [--base REV-or-checkout [--ab-rounds 10] [--ab-with nginx,caddy]]
        [--proxy-logs on|off] [--pacing fixed|jitter]
    .venv/bin/python bench/proxy.py --protocol h2|grpc|both   (bench/proxy_h2.py: h2load
        against fedgate, nginx http2 and Caddy)

``--base REV`` makes every fedgate variant also available as ``<variant>@base``, importing
``gateway``/``federation`` from another checkout or git revision; ``--ab-rounds N`` runs
``fedgate-log``, ``fedgate-log@base`` and the ``--ab-with`` targets in N interleaved
rounds (``bench/proxy_ab.py``): the A/B and the nginx / Caddy ratios from the same rounds.

Set-up (one run, same machine, same backend, same load):

* **backend**: nginx, one worker, ``return 200`` with a 23-byte body, keep-alive, pinned
  to CPU 1 together with the load generator. A C server that answers from memory is
  never the bottleneck (it does ~45k req/s on that core *while* sharing it with wrk,
  the "direct" row), so each row measures its proxy.
* **proxies**, each pinned to CPU 0 (``taskset -c 0``), one worker/thread/process each,
  up to 64 idle keep-alive connections to the backend, **an access log on** (one JSON
  line per request to a file, the way each writes it by default or buffered where it
  can, like fedgate's batched log; ``--proxy-logs off`` for none):
  fedgate (``fedgate serve`` from a manifest; ``fedgate`` metrics on, access log and
  tracing off; ``fedgate-log`` metrics and access log on, what issue 12 measures),
  nginx (``proxy_pass`` + ``keepalive 64`` upstream, ``access_log ... buffer=64k``),
  HAProxy (``nbthread 1``, ``http-reuse always``, ``option httplog`` to stdout), Caddy
  (``reverse_proxy`` with ``keepalive_idle_conns_per_host 64``, ``log`` in JSON to a
  file, ``GOMAXPROCS=1``). (Before, only fedgate-log logged and Caddy kept 32.)
* **load**: ``wrk -t 1 -c 50 -d 10s`` pinned to CPU 1, keep-alive. First the maximum
  (requests/s at a fixed concurrency of 50), then latency at **half of each one's
  maximum**: wrk with a Lua ``delay()`` that paces every connection at
  rate/connections (wrk2 is not installed; no coordinated-omission correction, which
  matters little at half load); ``--pacing jitter`` draws each wait from 0.5-1.5x of
  it, so the connections do not arrive in step as one burst. The added latency is the
  proxy's p50/p99 minus the backend's own p50/p99 at the same rate ("direct" paced at that rate).

``--profile`` runs py-spy on fedgate during its max-rate run and prints the top frames.
The machine is shared: figures move by +-20% between runs; the script prints the load
average before and after so a reader can judge.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxy_ab import base_tree, interleaved  # noqa: E402

from tests.support.ports import free_port  # noqa: E402

PROXY_CPU = "0"
LOAD_CPU = "1"
HOST = "127.0.0.1"

# the fedgate variants: "fedgate" as deployed by default in the bench (metrics on), and the
# observability on/off pair compared by --targets fedgate-full,fedgate-off (issue 7: the
# cost of metrics, JSON access logs and tracing together, as a ratio)
TELEMETRY = {
    "fedgate": "{accessLog: false, metrics: true, tracing: {enabled: false}}",
    "fedgate-full": "{accessLog: true, metrics: true, tracing: {enabled: true}}",
    "fedgate-off": "{accessLog: false, metrics: false, tracing: {enabled: false}}",
    # what issue 12 holds the data plane to: metrics and the access log on
    "fedgate-log": "{accessLog: true, metrics: true, tracing: {enabled: false}}",
}
BASE_TREE: Path | None = None  # --base
PROXY_LOGS = True  # --proxy-logs: nginx, HAProxy and Caddy write an access log too
BACKEND_HOST = "127.0.0.9"
BODY = "hello from the backend\n"
TOOLS = {"nginx": "nginx", "haproxy": "haproxy", "caddy": "caddy", "wrk": "wrk"}


@dataclass
class Result:
    name: str
    rps: float = 0.0
    per_cpu: float = 0.0  # requests per CPU second of the proxy's processes
    cpu: float = 0.0  # CPU seconds the proxy used during the max-rate run
    errors: int = 0
    paced_rate: float = 0.0
    p50: float = 0.0  # ms
    p99: float = 0.0
    added_p50: float | None = None
    added_p99: float | None = None
    notes: list[str] = field(default_factory=list)


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        print(f"installing {' '.join(missing)} with apt-get", flush=True)
        subprocess.run(["apt-get", "install", "-y", *missing], check=True)


def group_cpu(pgid: int | None) -> float:
    """CPU seconds (user + system) of every process in a process group."""
    if pgid is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:  # pgrp
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / tick


def wait_http(url: str, host: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url, headers={"Host": host})
            with urllib.request.urlopen(req, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.05)  # poll interval under a deadline
    raise RuntimeError(f"{url} did not answer: {last}")


class Procs:
    """Every process the bench starts; all stopped at the end, even on failure."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], *, cpu: str, env: dict[str, str] | None = None,
              log: Path) -> subprocess.Popen[bytes]:  # fmt: skip
        out = open(log, "ab")  # noqa: SIM115 - handed to the child
        p = subprocess.Popen(
            ["taskset", "-c", cpu, *cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        out.close()
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen[bytes]) -> None:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            self.stop(p)


def nginx_conf(tmp: Path, name: str, server: str) -> Path:
    d = tmp / name
    d.mkdir(exist_ok=True)
    conf = d / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path {d}/cb; proxy_temp_path {d}/pt; fastcgi_temp_path {d}/ft;
  uwsgi_temp_path {d}/ut; scgi_temp_path {d}/st;
  {server}
}}
""")
    return conf


# --vary: every request differs from the one before it on its connection (a counter in
# the query), as a fleet's clients mostly do; the default repeats one request (wrk's way)
VARY_LUA = """
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/?n=" .. n)
end
"""
VARY_SCRIPT: Path | None = None


def wrk(url: str, *, duration: int, connections: int, script: Path | None = None,
        env: dict[str, str] | None = None) -> tuple[float, int, float, float]:  # fmt: skip
    """(requests/s, errors, p50 ms, p99 ms) from one wrk run on the load CPU; the number
    of requests is left in ``wrk.last_requests``. With ``--vary`` every request differs."""
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t", "1", "-c", str(connections),
           "-d", f"{duration}s", "--latency", "-H", "Host: bench.test"]  # fmt: skip
    if VARY_SCRIPT is not None:
        if script is not None:  # the pacing script with the varying request added
            both = script.with_name("vary-" + script.name)
            both.write_text(script.read_text() + VARY_SCRIPT.read_text())
            script = both
        else:
            script = VARY_SCRIPT
    if script is not None:
        cmd += ["-s", str(script)]
    out = subprocess.run(
        [*cmd, url], capture_output=True, text=True, env={**os.environ, **(env or {})},
        timeout=duration + 30,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    wrk.last_requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[attr-defined, union-attr]
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m2 = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m2:
        errors += int(m2.group(1))

    def pct(label: str) -> float:
        mm = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not mm:
            return float("nan")
        v, unit = float(mm.group(1)), mm.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    return rps, errors, pct("50"), pct("99")


# the proxies' access logs (--proxy-logs on): a JSON line per request with about the fields
# of fedgate's, to a file; nginx buffers like fedgate's batched writer
NGINX_LOG_FORMAT = """log_format fedgate_like escape=json
    '{"time":"$time_iso8601","method":"$request_method","host":"$host","path":"$uri",'
    '"status":$status,"duration":$request_time,"upstream":"$upstream_addr",'
    '"upstream_time":"$upstream_response_time","client":"$remote_addr",'
    '"bytes_out":$body_bytes_sent,"user_agent":"$http_user_agent",'
    '"request_id":"$http_x_request_id","protocol":"$server_protocol"}';"""
# in the server block: the http level's "access_log off" cancels any other at that level
NGINX_LOG = "access_log {d}/access.log fedgate_like buffer=64k flush=1s;"
HAPROXY_LOG = "  log stdout format raw local0\n  option httplog"
CADDY_LOG = """log {{
    output file {path}
    format json
  }}"""

PACE_LUA = """
local d = tonumber(os.getenv("PACE_DELAY_MS") or "0")
local jitter = os.getenv("PACE_JITTER") == "1"
math.randomseed(os.time())
function delay()
  if jitter then
    return d * (0.5 + math.random())
  end
  return d
end
"""


def paced(url: str, rate: float, *, duration: int, connections: int, tmp: Path,
          jitter: bool = False) -> tuple[float, int, float, float]:  # fmt: skip
    """wrk with every connection waiting connections/rate between its requests. Fixed
    pacing keeps the connections in step (they all start together), so each round
    arrives as a burst of ``connections`` requests at once; ``jitter`` draws each wait
    uniformly from 0.5-1.5x (the same mean rate), which spreads the arrivals out."""
    script = tmp / "pace.lua"
    script.write_text(PACE_LUA)
    delay_ms = max(1, round(connections * 1000.0 / rate))
    env = {"PACE_DELAY_MS": str(delay_ms), "PACE_JITTER": "1" if jitter else "0"}
    return wrk(url, duration=duration, connections=connections, script=script, env=env)


@contextlib.contextmanager
def target(name: str, procs: Procs, tmp: Path, backend: str) -> Iterator[tuple[str, int | None]]:
    """Start a proxy (or nothing for direct); yield (URL to load, its process group)."""
    if name == "direct":
        yield f"http://{backend}/", None
        return
    port = free_port(HOST)
    log = tmp / f"{name}.log"
    if name == "nginx":
        conf = nginx_conf(tmp, "proxy-nginx", f"""
  upstream backend {{ server {backend}; keepalive 64; }}
  {NGINX_LOG_FORMAT if PROXY_LOGS else ""}
  server {{
    listen {HOST}:{port};
    {NGINX_LOG.format(d=tmp / "proxy-nginx") if PROXY_LOGS else ""}
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
  }}""")  # fmt: skip
        p = procs.start(["nginx", "-c", str(conf)], cpu=PROXY_CPU, log=log)
    elif name == "haproxy":
        conf = tmp / "haproxy.cfg"
        conf.write_text(f"""
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
  option forwardfor
{HAPROXY_LOG if PROXY_LOGS else ""}
frontend fe
  bind {HOST}:{port}
  default_backend be
backend be
  server b1 {backend}
""")
        p = procs.start(["haproxy", "-f", str(conf)], cpu=PROXY_CPU, log=log)
    elif name == "caddy":
        conf = tmp / "Caddyfile"
        conf.write_text(f"""
{{
  admin off
  auto_https off
}}
http://:{port} {{
  bind {HOST}
  reverse_proxy {backend} {{
    transport http {{
      keepalive_idle_conns_per_host 64
    }}
  }}
  {CADDY_LOG.format(path=tmp / "caddy-access.log") if PROXY_LOGS else ""}
}}
""")
        p = procs.start(
            ["caddy", "run", "--config", str(conf), "--adapter", "caddyfile"],
            cpu=PROXY_CPU, log=log,
            env={"GOMAXPROCS": "1", "XDG_DATA_HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp)},
        )  # fmt: skip
    elif name.partition("@")[0] in TELEMETRY:
        variant, _, where = name.partition("@")
        manifest = tmp / "manifest.yaml"
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
    endpoints: {{c1: ["{backend}"]}}
""")
        config = tmp / "gateway.yaml"
        config.write_text(f"""
cluster: c1
listen: {{public: "{HOST}:{port}", eastWest: null, admin: "{HOST}:{free_port(HOST)}"}}
manifest: {manifest}
telemetry: {TELEMETRY[variant]}
""")
        if where == "base":
            if BASE_TREE is None:
                raise SystemExit(f"{name}: needs --base")
            # the base tree's packages first (``-c`` puts the working directory on sys.path)
            cli = f"import sys; sys.path.insert(0, {str(BASE_TREE)!r}); "
            cli += "from federation.cli import main; sys.exit(main())"
            p = procs.start([sys.executable, "-c", cli, "serve", "--config", str(config)],
                            cpu=PROXY_CPU, log=log)  # fmt: skip
        else:
            fedgate = str(Path(sys.executable).parent / "fedgate")
            p = procs.start([fedgate, "serve", "--config", str(config)], cpu=PROXY_CPU, log=log)
    else:
        raise SystemExit(f"unknown target {name}")
    try:
        wait_http(f"http://{HOST}:{port}/", "bench.test")
    except RuntimeError:
        print(log.read_text()[-2000:], file=sys.stderr)
        raise
    try:
        yield f"http://{HOST}:{port}/", p.pid
    finally:
        procs.stop(p)


def profile(pid: int, seconds: int, tmp: Path) -> str:
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        return "(py-spy not installed: .venv/bin/pip install py-spy)"
    out = tmp / "profile.txt"
    subprocess.run([str(spy), "record", "-p", str(pid), "-d", str(seconds), "-r", "250",
                    "-f", "raw", "-o", str(out), "--nonblocking"],
                   capture_output=True, timeout=seconds + 30)  # fmt: skip
    counts: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        total += int(n)
        leaf = stack.split(";")[-1]
        counts[leaf] = counts.get(leaf, 0) + int(n)
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:15]
    return "\n".join(f"  {n * 100 / total:5.1f}%  {f}" for f, n in top)


def ab(procs: Procs, tmp: Path, backend: str, rounds: int, connections: int,
       others: list[str]) -> None:  # fmt: skip
    """Interleaved A/B (``bench/proxy_ab.py``): 3 s at max rate each, after 1 s warm-up."""

    def measure(name: str) -> float | None:
        with target(name, procs, tmp, backend) as (url, pgid):
            wrk(url, duration=1, connections=connections)  # warm up
            cpu0 = group_cpu(pgid)
            wrk(url, duration=3, connections=connections)
            cpu = group_cpu(pgid) - cpu0
        return wrk.last_requests / cpu if cpu > 0 else None  # type: ignore[attr-defined]

    interleaved(["fedgate-log", "fedgate-log@base", *others], rounds, measure)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--targets", default="direct,fedgate,nginx,haproxy,caddy")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--base",
        default=None,
        help="another checkout or a git revision: fedgate variants as <variant>@base",
    )
    ap.add_argument(
        "--ab-rounds",
        type=int,
        default=0,
        help="with --base: interleaved fedgate-log / fedgate-log@base rounds",
    )
    ap.add_argument(
        "--ab-with",
        default="nginx,caddy",
        help="other targets run in every A/B round (ratios of the same rounds)",
    )
    ap.add_argument(
        "--proxy-logs",
        choices=("on", "off"),
        default="on",
        help="nginx, HAProxy and Caddy write an access log (as fedgate-log does)",
    )
    ap.add_argument("--pacing", choices=("fixed", "jitter"), default="fixed",
                    help="half-load waits: fixed (connections in step, bursts) or jittered "
                         "0.5-1.5x (same mean rate, spread arrivals)")  # fmt: skip
    ap.add_argument("--vary", action="store_true",
                    help="every request differs from the one before (a counter in the "
                         "query); default: wrk repeats one request")  # fmt: skip
    args = ap.parse_args()
    global BASE_TREE, PROXY_LOGS, VARY_SCRIPT
    PROXY_LOGS = args.proxy_logs == "on"
    ensure_tools()
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="fedgate-bench-"))
    if args.vary:
        VARY_SCRIPT = tmp / "vary.lua"
        VARY_SCRIPT.write_text(VARY_LUA)
    BASE_TREE = base_tree(args.base, tmp) if args.base is not None else None
    procs = Procs()
    results: dict[str, Result] = {}
    load_before = os.getloadavg()
    try:
        bport = free_port(BACKEND_HOST)
        backend = f"{BACKEND_HOST}:{bport}"
        conf = nginx_conf(
            tmp,
            "backend",
            f"""
  server {{ listen {backend}; location / {{ return 200 "{BODY.strip()}\\n"; }} }}""",
        )
        procs.start(["nginx", "-c", str(conf)], cpu=LOAD_CPU, log=tmp / "backend.log")
        wait_http(f"http://{backend}/", "bench.test")
        if args.ab_rounds:
            others = [t.strip() for t in args.ab_with.split(",") if t.strip()]
            ab(procs, tmp, backend, args.ab_rounds, args.connections, others)
        for name in names:
            res = Result(name)
            with target(name, procs, tmp, backend) as (url, pgid):
                wrk(url, duration=2, connections=args.connections)  # warm up
                if name == "fedgate" and args.profile:
                    pid = procs.procs[-1].pid
                    import threading

                    holder: dict[str, str] = {}
                    secs = max(args.duration - 2, 2)

                    def run_profile(
                        h: dict[str, str] = holder, p: int = pid, d: int = secs
                    ) -> None:
                        h["p"] = profile(p, d, tmp)

                    th = threading.Thread(target=run_profile)
                    th.start()
                cpu0 = group_cpu(pgid)
                res.rps, res.errors, _, _ = wrk(
                    url, duration=args.duration, connections=args.connections
                )
                res.cpu = group_cpu(pgid) - cpu0
                if res.cpu > 0:
                    res.per_cpu = wrk.last_requests / res.cpu  # type: ignore[attr-defined]
                if name == "fedgate" and args.profile:
                    th.join()
                    res.notes.append("py-spy (self time):\n" + holder.get("p", ""))
                res.paced_rate = res.rps / 2
                _, e2, res.p50, res.p99 = paced(url, res.paced_rate, duration=args.duration,
                                                connections=args.connections, tmp=tmp,
                                           jitter=args.pacing == "jitter")  # fmt: skip
                res.errors += e2
            results[name] = res
            line = f"{name:8} {res.rps:10.0f} req/s  {res.per_cpu:8.0f} req/CPU-s  "
            line += f"p50 {res.p50:.2f} ms  p99 {res.p99:.2f} ms at {res.paced_rate:.0f} req/s"
            print(f"{line}  errors {res.errors}", flush=True)
        # the backend alone at each proxy's paced rate: what the proxy adds
        if "direct" in names:
            with target("direct", procs, tmp, backend) as (url, _):
                for name, res in results.items():
                    if name == "direct":
                        continue
                    _, _, d50, d99 = paced(url, res.paced_rate, duration=args.duration,
                                           connections=args.connections, tmp=tmp,
                                           jitter=args.pacing == "jitter")  # fmt: skip
                    res.added_p50 = res.p50 - d50
                    res.added_p99 = res.p99 - d99
    finally:
        procs.stop_all()
    load_after = os.getloadavg()

    print()
    print(f"wrk -t1 -c{args.connections} -d{args.duration}s, {args.pacing} pacing, "
          f"{'every request different' if args.vary else 'one request repeated'}; "
          f"proxy on CPU {PROXY_CPU}, wrk + "
          f"nginx backend on CPU {LOAD_CPU}; load average before "
          f"{load_before[0]:.2f}, after {load_after[0]:.2f}")  # fmt: skip
    cols = ("req/s", "req/CPU-s", "half rate", "p50 ms", "p99 ms", "+p50 ms", "+p99 ms")
    print(f"{'target':8} | " + " | ".join(f"{c:>9}" for c in cols) + " | errors")
    print("-" * 100)
    for name, r in results.items():
        cells = [
            f"{r.rps:9.0f}",
            f"{r.per_cpu:9.0f}" if r.per_cpu else "        -",
            f"{r.paced_rate:9.0f}",
            f"{r.p50:9.2f}",
            f"{r.p99:9.2f}",
            f"{r.added_p50:9.2f}" if r.added_p50 is not None else "        -",
            f"{r.added_p99:9.2f}" if r.added_p99 is not None else "        -",
        ]
        print(f"{name:8} | " + " | ".join(cells) + f" | {r.errors}")
    f = results.get("fedgate")
    if f:
        ratio: dict[str, float] = {}
        for other in ("caddy", "nginx", "haproxy"):
            o = results.get(other)
            if o and o.rps and o.per_cpu:
                ratio[other] = f.per_cpu / o.per_cpu
                print(f"fedgate / {other}: {ratio[other]:.2f}x requests per CPU second "
                      f"({f.rps / o.rps:.2f}x wall-clock req/s)")  # fmt: skip
        goals = []
        if "caddy" in ratio:
            goals.append(f"fedgate >= 1.0x caddy: {ratio['caddy'] >= 1.0}")
        if "nginx" in ratio:
            goals.append(f"fedgate >= 0.35x nginx: {ratio['nginx'] >= 0.35}")
        if f.added_p99 is not None:
            goals.append(f"p99 added at half load <= 2 ms: {f.added_p99 <= 2.0}")
        print("goals: " + "; ".join(goals))
        for note in f.notes:
            print(note)
    logged = results.get("fedgate-log")
    if logged and logged.per_cpu:
        caddy, nginx = results.get("caddy"), results.get("nginx")
        goals = []
        if caddy and caddy.per_cpu:
            q = logged.per_cpu / caddy.per_cpu
            goals.append(f"fedgate-log / caddy {q:.2f}x (>= 1.2x: {q >= 1.2})")
        if nginx and nginx.per_cpu:
            q = logged.per_cpu / nginx.per_cpu
            goals.append(f"fedgate-log / nginx {q:.2f}x (>= 0.45x: {q >= 0.45})")
        if goals:
            print("metrics + access log on, requests per CPU second: " + "; ".join(goals))
    full, off = results.get("fedgate-full"), results.get("fedgate-off")
    if full and off and full.per_cpu and off.per_cpu:
        cost = 1 - full.per_cpu / off.per_cpu
        print(
            f"observability (metrics + access log + tracing) on / off: "
            f"{full.per_cpu / off.per_cpu:.2f}x requests per CPU second "
            f"({full.rps / off.rps:.2f}x wall clock); cost {cost:.0%}; goal <= 10%: {cost <= 0.10}"
        )
    return 0


if __name__ == "__main__":
    if "--protocol" in sys.argv[1:]:  # HTTP/2 and gRPC: h2load against nginx and Caddy
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from proxy_h2 import main as main_h2

        raise SystemExit(main_h2())
    raise SystemExit(main())
