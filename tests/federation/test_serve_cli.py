"""`fedgate serve` on bad input: one line on stderr, a non-zero exit, never a traceback."""

from __future__ import annotations

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
        ("cluster: aws\nunknown: 1\n", ["unknown", "Extra inputs"]),
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
        wait_for(lambda: log.read_text().count("trying again") >= 2, timeout=30, what="two retries")
        assert proc.poll() is None, log.read_text()
        text = log.read_text()
        assert "vault" in text and "no TLS cache configured" in text
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
    settings["limits"] = {"drainTimeout": 1}
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
