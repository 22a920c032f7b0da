"""``fedgate health`` and ``fedgate explain``: against a real admin API and real etcd."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from federation import codec
from federation.cli import main
from federation.clikit import camelize
from federation.commands.health import render, use_colour
from federation.etcd import EtcdClient
from federation.globalhealth import global_health
from federation.health_summary import summary_name
from federation.healthquery import MAX_LIMIT, HealthQuery
from federation.keys import KeyLayout
from federation.model import GatewayRecord, HealthState, Observation
from gateway.types import ViewHolder
from tests.federation.admin_server import AdminServer
from tests.federation.views import CLUSTERS, NOW, sample_view
from tests.support.etcd import EtcdCluster
from tests.support.ports import free_port
from tests.support.wait import wait_for

TOKEN = "cli-token"
UP, DOWN = HealthState.HEALTHY, HealthState.UNHEALTHY
FEDGATE = str(Path(sys.executable).parent / "fedgate")  # the installed entry point


@pytest.fixture
def admin() -> Iterator[AdminServer]:
    def explain(host: str, path: str, method: str, origin: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "request": {
                "host": host, "path": path, "method": method, "from": origin or "aws-eu-west-1",
            },
            "revision": 57, "config_revision": 40, "view_source": "etcd", "stale": False,
        }  # fmt: skip
        if host != "shop.acme.com":
            out["route"] = None
            out["decision"] = "404: no registered route for this host and path"
            return out
        out["route"] = {"service": "checkout", "host": "shop.acme.com", "pathPrefix": "/checkout"}
        out["candidates"] = [
            {"cluster": "aws-eu-west-1", "tier": 0, "state": "unhealthy", "score": 0.0,
             "chosen": False, "reason": "not usable: no healthy endpoint; retry only"},
            {"cluster": "gcp-europe-west4", "tier": 0, "state": "healthy", "score": 0.93,
             "chosen": True, "reason": "healthy, tier 0, capacity 2; chosen: share 100%"},
        ]  # fmt: skip
        out["plan"] = ["gcp-europe-west4", "aws-eu-west-1"]
        out["decision"] = (
            "forwarded from aws-eu-west-1 to gcp-europe-west4 over east-west mutual TLS"
        )
        return out

    holder = ViewHolder(sample_view(states={("checkout", "onprem-fra1"): HealthState.UNHEALTHY}))
    with AdminServer(holder, TOKEN, explain=explain) as server:
        yield server


def fedgate(
    *argv: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FEDGATE, *argv],
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "NO_COLOR": "", **(env or {})},
    )  # fmt: skip


def default_sigint() -> None:
    """In the child before exec: Ctrl-C as in a foreground terminal. A suite started in the
    background of a non-interactive shell (`nohup make test &`) inherits SIGINT ignored,
    and an ignored disposition survives exec: the watcher would never see the signal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# ------------------------------------------------------------------ admin API


def test_health_table_from_the_admin_api(admin: AdminServer) -> None:
    r = fedgate("health", "--admin", admin.url, "--token", TOKEN)
    assert r.returncode == 1, r.stderr  # onprem-fra1 is unhealthy
    out = r.stdout
    assert "federation acme-prod" in out and "\x1b[" not in out  # no colour into a pipe
    for c in CLUSTERS:
        assert c.name in out
    # grouped by cloud / environment, in that order
    groups = [line.strip() for line in out.splitlines() if " / " in line and "CLUSTER" not in line]
    assert groups == ["aws / prod", "aws / staging", "gcp / prod", "onprem / prod"]
    fra = next(line for line in out.splitlines() if line.strip().startswith("onprem-fra1"))
    assert "unhealthy" in fra
    matrix = next(line for line in out.splitlines() if line.startswith("checkout"))
    assert "unhealthy 0/2" in matrix and "healthy 2/2" in matrix
    assert "convergence 100% on config revision 40" in out


def test_health_json_from_the_admin_api(admin: AdminServer) -> None:
    r = fedgate("health", "--output", "json", "--admin", admin.url, "--token", TOKEN)
    assert r.returncode == 1, r.stderr
    body = json.loads(r.stdout)
    # the CLI asks for the largest page the API gives (MAX_LIMIT)
    page = HealthQuery(limit=MAX_LIMIT)
    expected = camelize(global_health(admin.holder.view, now=body["generatedAt"], query=page))
    assert body == expected
    assert body["services"][0]["routes"][0]["pathPrefix"] == "/checkout"
    assert body["clusters"][0]["labels"] == {"zone": "eu"}  # data keys kept as written


def test_token_from_the_environment(admin: AdminServer) -> None:
    r = fedgate("health", "--json", env={"FEDGATE_ADMIN": admin.url, "FEDGATE_ADMIN_TOKEN": TOKEN})
    assert r.returncode == 1 and not r.stderr, r.stderr
    r = fedgate("health", "--json", env={"FEDGATE_ADMIN": admin.url, "FEDGATE_TOKEN": TOKEN})
    assert r.returncode == 1 and not r.stderr, r.stderr


def test_token_from_a_file(admin: AdminServer, tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    r = fedgate("health", "--json", "--admin", admin.url, "--token-file", str(path))
    assert r.returncode == 1 and json.loads(r.stdout)["federation"] == "acme-prod", r.stderr
    r = fedgate("health", "--admin", admin.url, "--token-file", str(tmp_path / "missing"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--token-file" in r.stderr


@pytest.mark.parametrize("token", [None, "wrong"])
def test_refused_token_is_one_line(admin: AdminServer, token: str | None) -> None:
    argv = ["health", "--admin", admin.url] + (["--token", token] if token else [])
    r = fedgate(*argv, env={"FEDGATE_ADMIN_TOKEN": "", "FEDGATE_TOKEN": ""})
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "refused the token (401)" in r.stderr
    assert "Traceback" not in r.stderr


def test_unreachable_admin_is_one_line() -> None:
    port = free_port()
    r = fedgate("health", "--admin", f"http://127.0.0.1:{port}", "--token", "x")
    assert r.returncode == 1
    assert r.stderr.startswith("fedgate health: cannot reach the admin API at http://127.0.0.1:")
    assert r.stderr.count("\n") == 1


def test_watch_redraws_until_ctrl_c(admin: AdminServer) -> None:
    proc = subprocess.Popen(
        [FEDGATE, "health", "--watch", "--json", "--interval", "0.2",
         "--admin", admin.url, "--token", TOKEN],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        frames: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while len(frames) < 3 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            frames.append(json.loads(line))
        assert len(frames) == 3
        # the view changes while watching: the next frames show it
        admin.holder.swap(sample_view(states={("search", "aws-us-east-1"): HealthState.UNHEALTHY}))

        def shows_change() -> bool:
            frame = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
            states = {c["name"]: c["state"] for c in frame["clusters"]}
            return states["aws-us-east-1"] == "unhealthy"

        wait_for(shows_change, timeout=10, interval=0, what="watch shows the change")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None and proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_watch_stops_cleanly_on_sigterm_and_a_closed_pipe(admin: AdminServer) -> None:
    """SIGTERM (what supervisors send) ends --watch with 0; `| head` ends it quietly."""
    argv = [FEDGATE, "health", "--watch", "--interval", "0.1", "--admin", admin.url,
            "--token", TOKEN]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert "every 0.1s" in proc.stdout.readline()
        assert "federation acme-prod" in proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    shell = f"{' '.join(argv)} | head -n 2"
    r = subprocess.run(["bash", "-c", "set -o pipefail; " + shell], capture_output=True,
                       text=True, timeout=30)  # fmt: skip
    assert r.stdout.count("\n") == 2 and r.stderr == "", r.stderr
    assert r.returncode == 141  # the writer ends as a Unix tool killed by SIGPIPE would


def test_watch_table_in_process(admin: AdminServer, capsys: pytest.CaptureFixture[str]) -> None:
    """Bounded in-process: the fetch raises KeyboardInterrupt on the third round."""
    import federation.commands.health as health

    calls = 0
    real = health.from_admin

    def counting(args: Any) -> Any:
        fetch = real(args)

        def wrapped() -> dict[str, Any]:
            nonlocal calls
            calls += 1
            if calls == 3:
                raise KeyboardInterrupt
            return fetch()

        return wrapped

    health.from_admin = counting  # type: ignore[assignment]
    try:
        code = main(
            ["health", "--watch", "--interval", "0.05", "--admin", admin.url, "--token", TOKEN]
        )
    finally:
        health.from_admin = real  # type: ignore[assignment]
    assert code == 0 and calls == 3
    out = capsys.readouterr().out
    assert out.count("federation acme-prod") == 2 and out.count("every 0.05s") == 2


# ------------------------------------------------------------------ colour


def test_colour_on_a_terminal_and_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    body = global_health(
        sample_view(states={("checkout", "onprem-fra1"): HealthState.UNHEALTHY}), now=NOW
    )
    coloured = render(body, colour=True)
    assert "\x1b[31;1m✖ unhealthy\x1b[0m" in coloured and "\x1b[32m● healthy\x1b[0m" in coloured
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty:
            monkeypatch.delenv("NO_COLOR", raising=False)
            assert use_colour(tty) is True
            monkeypatch.setenv("NO_COLOR", "1")
            assert use_colour(tty) is False
    finally:
        os.close(master)
        os.close(slave)


# -------------------------------------------------------------------- etcd


async def _register(etcd: EtcdCluster, layout: KeyLayout) -> None:
    view = sample_view()
    client = EtcdClient(etcd.endpoints)
    try:
        await client.connect()
        await client.put(layout.federation(), b'{"name": "acme-prod"}')
        for c in view.clusters.values():
            await client.put(layout.cluster(c.name), codec.encode(c))
        for s in view.services.values():
            await client.put(layout.service(s.name), codec.encode(s))
        _, kvs = await client.get_prefix(layout.prefix)
        config_revision = max(kv.mod_revision for kv in kvs)
        for c in view.clusters.values():
            if c.name == "onprem-fra1":
                continue  # no live gateway there
            g = GatewayRecord(id=f"{c.name}-gw", cluster=c.name, applied_revision=config_revision,
                              cert_not_after=time.time() + 3600, vault_ok=True)  # fmt: skip
            await client.put(layout.gateway(c.name, g.id), codec.encode(g))
            obs = [
                Observation(g.id, c.name, s.name, cl, DOWN if cl == "gcp-europe-west4" else UP,
                            healthy=2, total=2, at=time.time())
                for s in view.services.values() for cl in s.clusters
            ]  # fmt: skip
            by_key: dict[str, list[Observation]] = {}  # the cluster's summary, as its leader
            for o in obs:
                by_key.setdefault(layout.health_summary(c.name, summary_name(o)), []).append(o)
            for key, value in by_key.items():
                await client.put(key, codec.encode(value))
    finally:
        await client.close()


def test_health_from_etcd(etcd: EtcdCluster) -> None:
    layout = KeyLayout("/fg-test/")
    asyncio.run(_register(etcd, layout))
    r = fedgate("health", "--json", "--etcd", ",".join(etcd.endpoints), "--prefix", "/fg-test/")
    assert r.returncode == 1, r.stderr  # gcp-europe-west4 is unhealthy
    body = json.loads(r.stdout)
    assert body["federation"] == "acme-prod" and body["source"] == "etcd"
    clusters = {c["name"]: c for c in body["clusters"]}
    assert set(clusters) == {c.name for c in CLUSTERS}
    assert clusters["gcp-europe-west4"]["state"] == "unhealthy"
    assert clusters["aws-eu-west-1"]["state"] == "healthy"
    assert clusters["onprem-fra1"]["liveGateways"] == 0
    assert "no live gateway" in clusters["onprem-fra1"]["reasons"]
    assert body["convergence"]["share"] == 1.0 and body["convergence"]["gateways"] == 3
    assert body["certificates"]["expiring"] and len(body["certificates"]["expiring"]) == 3
    table = fedgate("health", "--etcd", etcd.endpoints[0], "--prefix", "/fg-test/")
    assert table.returncode == 1 and "gcp-europe-west4" in table.stdout


def test_etcd_down_is_one_line() -> None:
    port = free_port()
    started = time.monotonic()
    r = fedgate("health", "--etcd", f"http://127.0.0.1:{port}")
    assert r.returncode == 1
    assert r.stderr.startswith("fedgate health: etcd: ") and r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr
    assert time.monotonic() - started < 20


def test_bad_prefix_is_a_usage_error() -> None:
    r = fedgate("health", "--etcd", "http://127.0.0.1:1", "--prefix", "nope")
    assert r.returncode == 2 and r.stderr.count("\n") == 1


# ------------------------------------------------------------------- explain


def test_explain_prints_a_readable_trace(admin: AdminServer) -> None:
    r = fedgate("explain", "--host", "shop.acme.com", "--path", "/checkout/cart",
                "--admin", admin.url, "--token", TOKEN)  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "request    GET shop.acme.com/checkout/cart (entering aws-eu-west-1)" in out
    assert "route      service checkout" in out
    assert "plan       gcp-europe-west4 -> aws-eu-west-1" in out
    chosen = next(line for line in out.splitlines() if "gcp-europe-west4" in line and "yes" in line)
    assert "healthy" in chosen and "0.93" in chosen
    assert "decision   forwarded from aws-eu-west-1 to gcp-europe-west4" in out


def test_explain_json_and_no_route(admin: AdminServer) -> None:
    r = fedgate("explain", "--host", "shop.acme.com", "--json", "--from", "onprem-fra1",
                "--admin", admin.url, "--token", TOKEN)  # fmt: skip
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert body["request"]["from"] == "onprem-fra1" and body["plan"][0] == "gcp-europe-west4"
    assert body["configRevision"] == 40 and body["viewSource"] == "etcd"  # camelCase
    r = fedgate("explain", "--host", "other.example", "--admin", admin.url, "--token", TOKEN)
    assert r.returncode == 1 and "route      none" in r.stdout  # unmatched: exit 1


def test_explain_errors(admin: AdminServer) -> None:
    r = fedgate("explain", "--host", "shop.acme.com", "--from", "mars", "--admin", admin.url,
                "--token", TOKEN)  # fmt: skip
    assert r.returncode == 2 and "unknown cluster 'mars'" in r.stderr
    r = fedgate("explain", "--host", "shop.acme.com", env={"FEDGATE_ADMIN": ""})
    assert r.returncode == 2 and "--admin" in r.stderr
    r = fedgate("explain", "--host", "x", "--admin", admin.url, "--token", "bad")
    assert r.returncode == 1 and "401" in r.stderr


# ------------------------------------------------------------- 1,000 clusters


def _big_view(n: int, down: set[str]) -> Any:
    from dataclasses import replace as dc_replace
    from types import MappingProxyType

    from federation.model import Cluster, Endpoint, Route, Service
    from tests.federation.views import gateway, health

    clusters = [
        Cluster(f"c{i:04d}", f"r{i % 7}", ("aws", "gcp", "onprem")[i % 3], "prod", i % 2,
                f"https://c{i}:15443")
        for i in range(n)
    ]  # fmt: skip
    names = tuple(c.name for c in clusters)
    services = [Service(f"svc{j}", (Route(f"s{j}.acme.com"),), 8080, names) for j in range(3)]
    hs = {
        (s.name, c): health(s.name, c, DOWN if c in down else UP) for s in services for c in names
    }
    eps = {(s.name, c): (Endpoint("10.0.0.1:80", c, s.name),) for s in services for c in names}
    gws = tuple(gateway(c) for c in names)
    base = sample_view()
    return dc_replace(
        base,
        clusters=MappingProxyType({c.name: c for c in clusters}),
        services=MappingProxyType({s.name: s for s in services}),
        endpoints=MappingProxyType(eps),
        gateways=MappingProxyType({g.id: g for g in gws}),
        health=MappingProxyType(hs),
    )


def test_a_thousand_clusters_summarise_first_and_list_what_is_not_healthy() -> None:
    """#11: `fedgate health` at 1,000 clusters reads in one screen (was one row per
    cluster and a 1,000-column matrix)."""
    body = global_health(
        _big_view(1000, {"c0042", "c0777"}), now=NOW, query=HealthQuery(limit=MAX_LIMIT)
    )
    text = render(body)
    lines = text.splitlines()
    assert lines[0].startswith("federation acme-prod")
    assert lines[1].startswith("clusters 1000: 998 healthy") and "2 unhealthy" in lines[1]
    assert len(lines) < 30, text
    assert "c0042" in text and "c0777" in text and "c0001" not in text
    assert "2 clusters not healthy (998 healthy not listed; --all lists them)" in text
    matrix = next(line for line in lines if line.startswith("SERVICE"))
    assert matrix.split() == ["SERVICE", "c0042", "c0777"]
    everything = render(body, every=True)
    assert "c0001" in everything and len(everything.splitlines()) > 1000
