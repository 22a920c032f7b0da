"""Memory of a gateway under hostile upstreams: ``.venv/bin/python bench/hostile.py [--base TREE]``.

One ``fedgate serve`` process (metrics and access log on) in front of three misbehaving
upstreams (a process of their own, defined here):

* ``/head``: a response head that never ends (4 kB header lines, up to 800 MB);
* ``/many``: 200,000 response headers;
* ``/endless``: a chunked body that never ends, read by 20 clients that stop reading
  after the first bytes (slow clients), for ``--seconds``.

Printed: the gateway's resident memory after start-up, its peak (``VmHWM``) after each
scenario, and what the clients got. ``--base`` runs the same against another checkout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from federation.devstack.ports import free_port

HOST = "127.0.0.1"
UP_HOST = "127.0.0.61"

UPSTREAM = r"""
import asyncio, sys
host, port = sys.argv[1], int(sys.argv[2])
async def handle(r, w):
    try:
        head = await r.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1]
        if path.startswith(b"/head"):
            w.write(b"HTTP/1.1 200 OK\r\n")
            line = b"x-big: " + b"a" * 4000 + b"\r\n"
            for _ in range(800 * 16):  # 800 MB of 4 kB header lines
                w.write(line * 16)
                await w.drain()
        elif path.startswith(b"/many"):
            w.write(b"HTTP/1.1 200 OK\r\n")
            for i in range(200):
                w.write(b"".join(b"x-%d: v\r\n" % (i * 1000 + j) for j in range(1000)))
                await w.drain()
            w.write(b"content-length: 2\r\n\r\nok")
            await w.drain()
        else:
            w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            chunk = b"%x\r\n%b\r\n" % (65536, b"y" * 65536)
            while True:
                w.write(chunk)
                await w.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        w.close()
async def main():
    server = await asyncio.start_server(handle, host, port, backlog=1024)
    await server.serve_forever()
asyncio.run(main())
"""


def rss(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def request(port: int, path: str, *, read: bool = True) -> str:
    r, w = await asyncio.open_connection(HOST, port)
    try:
        w.write(f"GET {path} HTTP/1.1\r\nhost: hostile.test\r\n\r\n".encode())
        async with asyncio.timeout(30):
            line = await r.readline()
        return line.decode(errors="replace").strip()
    except TimeoutError:
        return "no answer in 30 s"
    finally:
        if read:
            w.close()


async def slow_clients(port: int, n: int, seconds: float) -> str:
    conns = []
    for _ in range(n):
        r, w = await asyncio.open_connection(HOST, port, limit=65536)
        w.transport.set_write_buffer_limits(0)
        w.write(b"GET /endless HTTP/1.1\r\nhost: hostile.test\r\n\r\n")
        conns.append((r, w))
    for r, w in conns:
        await r.readexactly(100)
        w.transport.pause_reading()  # and never reads again
    await asyncio.sleep(seconds)  # the hostile behaviour lasts this long
    cut = 0
    for r, w in conns:
        w.transport.resume_reading()
        try:
            async with asyncio.timeout(5):
                while await r.read(1 << 20):
                    pass
            cut += 1  # the gateway closed it
        except (TimeoutError, ConnectionError):
            pass
        w.close()
    return f"{cut}/{n} slow clients cut by the gateway"


def run(tree: str | None, seconds: float) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="fedgate-hostile-"))
    up_port = free_port(UP_HOST)
    procs = []
    try:
        procs.append(subprocess.Popen([sys.executable, "-c", UPSTREAM, UP_HOST, str(up_port)],
                                      start_new_session=True))  # fmt: skip
        (tmp / "manifest.yaml").write_text(f"""
apiVersion: fedgate/v1
kind: Federation
metadata: {{name: hostile}}
clusters:
  - {{name: c1, region: r1, cloud: other, environment: bench,
     gateway: {{eastWest: "http://127.0.0.1:9"}}}}
services:
  - name: hostile
    routes: [{{host: hostile.test, pathPrefix: /}}]
    port: 80
    clusters: [c1]
    endpoints: {{c1: ["{UP_HOST}:{up_port}"]}}
    timeouts: {{request: 5s}}
""")
        port = free_port(HOST)
        (tmp / "gateway.yaml").write_text(f"""
cluster: c1
listen: {{public: "{HOST}:{port}", eastWest: null, admin: "{HOST}:{free_port(HOST)}"}}
manifest: {tmp / "manifest.yaml"}
telemetry: {{accessLog: true, metrics: true, tracing: {{enabled: false}}}}
""")
        # the tree's packages first (``-c`` puts the working directory on sys.path)
        cli = "import sys; " + (f"sys.path.insert(0, {tree!r}); " if tree else "")
        cli += "from federation.cli import main; sys.exit(main())"
        env = dict(os.environ)
        log = open(tmp / "gateway.log", "wb")  # noqa: SIM115 - handed to the child
        gw = subprocess.Popen([sys.executable, "-c", cli, "serve", "--config",
                               str(tmp / "gateway.yaml")], stdout=log, stderr=subprocess.STDOUT,
                              env=env, start_new_session=True)  # fmt: skip
        procs.append(gw)
        deadline = time.monotonic() + 15
        while True:
            try:
                asyncio.run(request(port, "/many"))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)  # start-up poll under a deadline
        label = tree or "this tree"
        print(f"[{label}] after start-up: RSS {rss(gw.pid)[0]:.0f} MB", flush=True)
        got = asyncio.run(request(port, "/head"))
        print(f"[{label}] endless response head: {got!r}; RSS/peak {rss(gw.pid)[0]:.0f}/"
              f"{rss(gw.pid)[1]:.0f} MB", flush=True)  # fmt: skip
        got = asyncio.run(request(port, "/many"))
        print(f"[{label}] 200,000 response headers: {got!r}; RSS/peak {rss(gw.pid)[0]:.0f}/"
              f"{rss(gw.pid)[1]:.0f} MB", flush=True)  # fmt: skip
        got = asyncio.run(slow_clients(port, 20, seconds))
        now, peak = rss(gw.pid)
        print(f"[{label}] endless body, 20 clients that stop reading for {seconds:.0f} s: "
              f"{got}; RSS/peak {now:.0f}/{peak:.0f} MB", flush=True)  # fmt: skip
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--base", type=Path, default=None)
    args = ap.parse_args()
    run(None, args.seconds)
    if args.base is not None:
        run(str(args.base.resolve()), args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
