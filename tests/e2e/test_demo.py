"""`fedgate demo` end to end: a real federation, a failover drill, a clean stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _fedgate_processes() -> set[int]:
    """PIDs of processes started by a demo (gateways, backends, etcd, OpenBao)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    pids = set()
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        if "fedgate-demo-" in args or "federation.devstack.backend" in args:
            pids.add(int(pid))
    return pids


def test_demo_runs_a_drill_with_zero_failed_requests_and_cleans_up(tmp_path: Path) -> None:
    before = _fedgate_processes()
    tmp_before = {p.name for p in Path(tempfile.gettempdir()).glob("fedgate-demo-*")}
    report_path = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "federation.cli",
            "demo",
            "--duration",
            "24",
            "--no-color",
            "--rate",
            "150",
            "--report",
            str(report_path),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    out = result.stdout + result.stderr
    assert "Traceback" not in out, out[-4000:]
    assert result.returncode == 0, out[-4000:]
    report = json.loads(report_path.read_text())
    assert report["requests"] >= 150 * 15
    assert report["failed_idempotent_requests"] == 0, report["failures"]
    assert report["traffic_shifted"], out[-3000:]
    assert report["traffic_left_region_after_s"] <= 1.0
    assert report["traffic_returned"], out[-3000:]
    assert report["flaps"] == 0
    # a client resolving through the federation's DNS kept working through a region's loss
    assert report["dns"]["failed"] == 0, report["dns"]["errors"]
    assert report["dns"]["left_answers_after_s"] is not None
    # the output shows the URLs, the live display, the health tables and the report
    for text in ("status page", "req/s", "fedgate demo report", "traffic left the region after"):
        assert text in result.stdout
    # nothing left behind: no process, no temporary folder
    assert _fedgate_processes() - before == set()
    tmp_after = {p.name for p in Path(tempfile.gettempdir()).glob("fedgate-demo-*")}
    assert tmp_after - tmp_before == set()
