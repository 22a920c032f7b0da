"""`fedgate serve` on bad input: one line on stderr, a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.etcd import EtcdCluster
from tests.support.ports import free_port
from tests.support.wait import wait_for

FEDGATE = [sys.executable, "-m", "federation.cli"]


def serve(config: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEDGATE, "serve", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def gateway_settings(*, public: int, admin: int, etcd: str = "") -> dict[str, Any]:
    """A development gateway (plain east-west off) on the given loopback ports."""
    return {
        "cluster": "aws",
        "insecureEastWest": True,
        "listen": {
            "public": f"127.0.0.1:{public}",
            "admin": f"127.0.0.1:{admin}",
            "eastWest": None,
        },
        "etcd": {"endpoints": [etcd or "http://127.0.0.1:2379"]},
        "telemetry": {"logFormat": "json"},
    }


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fedgate serve: ")
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("cluster: aws\nlisten: {public: '127.0.0.1:notaport'}\n", ["listen.public", "HOST:PORT"]),
        ("listen: {public: '127.0.0.1:8080'}\n", ["cluster", "required"]),
        ("cluster: aws\nunknown: 1\n", [":2:1: unknown: unknown field 'unknown'"]),
        ("cluster: aws\netcd: {leaseTtl: 5}\n", [":2:18: etcd.leaseTtl", "unit", "'5s'"]),
        ("cluster: aws\nlimits:\n  drainTimeout: 1\n", [":3:17: limits.drainTimeout"]),
        ("cluster: aws\ntelemetry: {accessLog: yes}\n", ["telemetry.accessLog", "'yes'"]),
        ("cluster: aws\ntelemetry: {acessLog: false}\n", ["did you mean 'accessLog'"]),
        ("cluster: aws\netcd: {endpoints: ['http://127.0.0.1:abc']}\n", ["etcd.endpoints"]),
        ("cluster: aws\netcd: {endpoints: ['127.0.0.1:2379']}\n", ["etcd.endpoints", "http"]),
        ("cluster: aws\netcd: {prefix: 'fedgate'}\n", ["etcd.prefix"]),
        ("cluster: [aws\n", ["not valid YAML"]),
        ("- just\n- a list\n", ["mapping"]),
        ("cluster: aws\ntrustedProxies: ['10.0.0.0/33']\n", ["trustedProxies"]),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(
    tmp_path: Path, text: str, needles: list[str]
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(text)
    one_line_error(serve(config), 2, str(config), *needles)


def test_every_problem_has_its_own_line_with_its_position(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("cluster: aws\netcd:\n  leaseTtl: 5\n  dialTimeout: soon\nlimits: {x: 1}\n")
    r = serve(config)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert [line.split(": ")[1].rsplit(":", 2)[1:] for line in lines] == [
        ["3", "13"], ["4", "16"], ["5", "10"]
    ], r.stderr  # fmt: skip
    assert all(line.startswith(f"fedgate serve: {config}:") for line in lines)


def test_check_refuses_what_serve_would_die_on(tmp_path: Path) -> None:
    """An etcd endpoint the client cannot use passed --check, then serve died with a
    traceback; now both refuse it in one line (exit 2)."""
    config = tmp_path / "gateway.yaml"
    settings = gateway_settings(public=free_port(), admin=free_port(), etcd="http://127.0.0.1:abc")
    config.write_text(yaml.safe_dump(settings))
    for extra in (["--check"], []):
        r = subprocess.run([*FEDGATE, "serve", "--config", str(config), *extra],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        one_line_error(r, 2, "etcd.endpoints")


def test_the_example_settings_pass_check() -> None:
    example = Path(__file__).resolve().parents[2] / "gateway.example.yaml"
    env = {**os.environ, "FEDGATE_ADMIN_TOKEN": ""}
    r = subprocess.run([*FEDGATE, "serve", "--config", str(example), "--check"],
                       capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "ok: gateway for cluster" in r.stdout


def test_a_missing_settings_file_is_one_line(tmp_path: Path) -> None:
    one_line_error(serve(tmp_path / "nope.yaml"), 2, "No such file")


def test_east_west_without_vault_or_the_development_flag_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("cluster: aws\n")
    one_line_error(serve(config, "--check"), 2, "mutual TLS", "insecureEastWest")


def test_vault_unreachable_at_start_waits_and_says_why(tmp_path: Path) -> None:
    """Before: the gateway exited after 6.7 s, so a restart during a Vault outage left the
    cluster without gateways. Now it waits (no cached material here) and logs why."""
    config = tmp_path / "gateway.yaml"
    settings = gateway_settings(public=free_port(), admin=free_port())
    settings["listen"]["eastWest"] = f"127.0.0.1:{free_port()}"
    settings["vault"] = {
        "addr": f"http://127.0.0.1:{free_port()}",
        "auth": {"method": "token", "token": "x"},
    }
    del settings["insecureEastWest"], settings["etcd"]
    config.write_text(yaml.safe_dump(settings))
    log = tmp_path / "stderr.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [*FEDGATE, "serve", "--config", str(config)], stdout=err, stderr=err, text=True
        )
    try:
        wait_for(lambda: log.read_text().count('"vault.unavailable"') >= 2, timeout=30,
                 what="two retries")  # fmt: skip
        assert proc.poll() is None, log.read_text()
        text = log.read_text()
        assert '"cache": "no TLS cache configured"' in text
        assert "Traceback" not in text
    finally:
        proc.kill()
        proc.wait()


def test_a_port_in_use_is_one_line(tmp_path: Path, etcd: EtcdCluster) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "gateway.yaml"
        config.write_text(
            yaml.safe_dump(gateway_settings(public=port, admin=free_port(), etcd=etcd.endpoint))
        )
        one_line_error(serve(config), 2, "bind")


def test_sigterm_stops_a_running_gateway_cleanly(tmp_path: Path, etcd: EtcdCluster) -> None:
    """etcd is up but empty: the gateway runs (not ready), and SIGTERM drains and exits 0."""
    admin = free_port()
    config = tmp_path / "gateway.yaml"
    settings = gateway_settings(public=free_port(), admin=admin, etcd=etcd.endpoint)
    settings["limits"] = {"drainTimeout": "1s"}
    config.write_text(yaml.safe_dump(settings))
    proc = subprocess.Popen(
        [*FEDGATE, "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def admin_up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", admin)) == 0

        wait_for(admin_up, timeout=20, what="admin listener up")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in out + err


def test_the_error_example_of_docs_gateway_md_is_what_serve_prints(tmp_path: Path) -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "gateway.md").read_text()
    example = page.split("```yaml\n", 1)[1].split("```", 1)[0]
    shown = page.split("gives\n\n  ```\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "gateway.yaml"
    config.write_text("\n".join(line.removeprefix("  ") for line in example.splitlines()) + "\n")
    r = subprocess.run([*FEDGATE, "serve", "--config", "gateway.yaml", "--check"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.splitlines() == [line.strip() for line in shown.splitlines() if line.strip()]
