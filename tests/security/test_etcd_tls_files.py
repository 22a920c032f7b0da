"""An etcd TLS file that cannot be read is a one-line configuration error, everywhere.

Before: ``fedgate apply`` and ``fedgate health`` with ``--etcd-cacert`` naming a missing
file answered ``internal error: ValueError: ...`` (exit 1, as for a bug), and ``fedgate
serve`` with such an ``etcd.tls`` file died from its watch task the same way; only
``etcd-bootstrap`` said it in one line. (``serve --check`` does not read the files: they
exist only in the pod, where Vault may also write them at start.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.terraform.tf import REPO

MISSING = "/nonexistent-fedgate/ca.crt"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FEDGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "federation.cli", *args],
        cwd=REPO, env=base | (env or {}), capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


@pytest.mark.parametrize("command", [["apply", "clusters.example.yaml"], ["health"]])
def test_cli_names_the_unreadable_etcd_file_in_one_line(command: list[str]) -> None:
    proc = _run(*command, "--etcd", "https://127.0.0.1:1", "--etcd-cacert", MISSING)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"etcd TLS CA {MISSING}: No such file or directory" in lines[0]
    assert "internal error" not in proc.stderr


def test_serve_refuses_an_unreadable_etcd_tls_file_at_start(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "cluster: a\ninsecureEastWest: true\n"
        'listen: {public: "127.0.0.1:0", eastWest: "127.0.0.1:0", admin: "127.0.0.1:0"}\n'
        f'etcd: {{endpoints: ["https://127.0.0.1:1"], tls: {{ca: {MISSING}}}}}\n'
    )
    env = {"FEDGATE_ADMIN_TOKEN": "x" * 32}
    assert _run("serve", "--config", str(config), "--check", env=env).returncode == 0
    proc = _run("serve", "--config", str(config), env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"fedgate serve: etcd.tls: etcd TLS CA {MISSING}" in proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
