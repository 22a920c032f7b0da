"""Event logs: every module logs the one way, and a JSON run is one object per line.

The one way (``federation/logging.py``): ``log = get_logger(__name__)``, then
``log.<level>("area.what", key=value, ...)``: an event name and fields, never a
formatted sentence, never the standard library's ``logging.getLogger`` or structlog
directly. Checked over the source of ``gateway/`` and ``federation/``.
"""

from __future__ import annotations

import ast
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.etcd import EtcdCluster
from tests.support.ports import free_port
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[1]
HELPER = ROOT / "federation" / "logging.py"
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
EVENT = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"


def _sources() -> list[Path]:
    return sorted(p for d in ("gateway", "federation") for p in (ROOT / d).rglob("*.py"))


def _problems(path: Path) -> list[str]:
    """Every way ``path`` logs other than the one way."""
    import re

    tree = ast.parse(path.read_text(), str(path))
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    out: list[str] = []
    loggers: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            module = node.module if isinstance(node, ast.ImportFrom) else None
            for name in [*names, module or ""]:
                if name.split(".")[0] in ("logging", "structlog", "loguru"):
                    out.append(f"{where}:{node.lineno}: imports {name} (use get_logger)")
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            fn = node.value.func
            if isinstance(fn, ast.Name) and fn.id == "get_logger":
                args = node.value.args
                if not (len(args) == 1 and isinstance(args[0], ast.Name)
                        and args[0].id == "__name__"):  # fmt: skip
                    out.append(f"{where}:{node.lineno}: get_logger(__name__), not another name")
                loggers.update(t.id for t in node.targets if isinstance(t, ast.Name))
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        if not (isinstance(owner, ast.Name) and owner.id in loggers):
            continue
        if node.func.attr not in LEVELS:
            out.append(f"{where}:{node.lineno}: {owner.id}.{node.func.attr}: not a level")
            continue
        first = node.args[0] if node.args else None
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            out.append(f"{where}:{node.lineno}: the event name must be a literal")
        elif not re.match(EVENT, first.value):
            out.append(f"{where}:{node.lineno}: event {first.value!r} is not 'area.what'")
        if len(node.args) > 1:
            out.append(f"{where}:{node.lineno}: positional arguments (a %-format?): use fields")
    return out


def test_every_module_logs_events_with_fields_through_the_one_helper() -> None:
    sources = [p for p in _sources() if p != HELPER]
    problems = [line for p in sources for line in _problems(p)]
    assert not problems, "\n".join(problems)
    logging_modules = [p for p in sources if "get_logger(__name__)" in p.read_text()]
    assert len(logging_modules) >= 12  # the check saw the modules that log


def test_every_event_is_in_the_docs_table() -> None:
    """docs/observability.md lists every event the code can log."""
    import re

    page = (ROOT / "docs" / "observability.md").read_text()
    named = set(re.findall(r"`([a-z][a-z0-9_]*\.[a-z][a-z0-9_.]*)`", page))
    logged = {
        n.args[0].value
        for p in _sources()
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
        and n.func.attr in LEVELS and n.args and isinstance(n.args[0], ast.Constant)
        and isinstance(n.args[0].value, str) and re.match(EVENT, n.args[0].value)
    }  # fmt: skip
    assert len(logged) >= 30
    assert not logged - named, f"events missing from docs/observability.md: {logged - named}"


def test_the_check_finds_each_other_way(tmp_path: Path) -> None:
    bad = tmp_path / "probe.py"
    bad.write_text(
        "import logging\n"
        "from federation.logging import get_logger\n"
        "log = get_logger('fedgate.x')\n"
        "log.warning('lease %x expired', 3)\n"
        "log.info('Started')\n"
        "log.info(name)\n"
        "log.info('watch.resumed', revision=3)\n"
    )
    found = _problems(bad)
    assert len(found) == 6, found  # the import, the name, the sentence x2, its arg, the non-literal


def _serve_settings(etcd: str) -> dict[str, Any]:
    return {
        "cluster": "aws",
        "insecureEastWest": True,
        "listen": {
            "public": f"127.0.0.1:{free_port()}",
            "admin": f"127.0.0.1:{free_port()}",
            "eastWest": None,
        },
        "etcd": {"endpoints": [etcd]},
        "limits": {"drainTimeout": "1s"},
        "telemetry": {"logFormat": "json", "logLevel": "info"},
    }


def _events(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as one JSON object (fails on a line that is not)."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            obj = json.loads(line)
        except ValueError:
            raise AssertionError(f"line {n} is not JSON: {line!r}\n{text}") from None
        assert isinstance(obj, dict), line
        assert list(obj)[:3] == ["timestamp", "level", "event"], line
        assert isinstance(obj.get("logger"), str), line
        out.append(obj)
    return out


def _named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == name]


@pytest.mark.timeout(90)
def test_a_json_run_logs_a_watch_restart_as_one_object_per_line(
    tmp_path: Path, etcd: EtcdCluster
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(_serve_settings(etcd.endpoint)))
    err = tmp_path / "stderr.log"
    with open(err, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "federation.cli", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:

        def seen(name: str) -> bool:
            assert proc.poll() is None, err.read_text()
            return bool(_named(_events(err.read_text()), name))

        wait_for(lambda: seen("serve.started"), timeout=30, what="serve.started")
        etcd.stop()
        wait_for(lambda: seen("watch.interrupted"), timeout=30, what="watch.interrupted")
        etcd.restart()
        wait_for(lambda: seen("watch.resumed"), timeout=30, what="watch.resumed")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = _events(err.read_text())
    (interrupted,) = _named(events, "watch.interrupted")[:1]
    assert interrupted["level"] == "warning" and interrupted["failures"] == 1
    assert interrupted["logger"] == "federation.watch" and interrupted["error"]
    (resumed,) = _named(events, "watch.resumed")[:1]
    assert resumed["level"] == "info" and resumed["reconnects"] >= 1
    assert isinstance(resumed["revision"], int)
    (started,) = _named(events, "serve.started")
    assert started["cluster"] == "aws" and "public" in started["listeners"]
    assert _named(events, "serve.stopped")  # the shutdown too


def test_foreign_records_and_failures_render_in_the_same_shape() -> None:
    """uvicorn's own records (standard-library logging, %-format) and an event with an
    exception come out as one JSON object per line, like every event."""
    import io
    import logging

    from federation.logging import configure_logging, get_logger

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    out = io.StringIO()
    try:
        assert configure_logging("json", "info", stream=out) == "json"
        logging.getLogger("uvicorn.error").warning("Invalid HTTP request %s.", "received")
        log = get_logger("tests.event_logs")
        log.debug("probe.hidden")  # below the level: nothing
        try:
            raise RuntimeError("boom\nsecond line")
        except RuntimeError:
            log.exception("probe.failed", stream=3)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    uvicorn, failed = _events(out.getvalue())
    assert uvicorn["event"] == "Invalid HTTP request received." and uvicorn["level"] == "warning"
    assert uvicorn["logger"] == "uvicorn.error"
    assert failed["event"] == "probe.failed" and failed["stream"] == 3
    assert failed["level"] == "error" and "RuntimeError: boom" in failed["exception"]


def test_uvicorn_records_render_in_the_same_shape_after_uvicorn_configured_its_loggers() -> None:
    """uvicorn's default logging config gives its loggers handlers that stop propagation;
    configured afterwards, the one rendering still gets their records (this failed when
    another test had built a default ``uvicorn.Config`` earlier in the same process)."""
    import io
    import logging

    import uvicorn

    from federation.logging import configure_logging

    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    saved_loggers = {
        n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate) for n in names
    }
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    out = io.StringIO()
    try:
        uvicorn.Config(app=lambda *a: None, lifespan="off")  # applies uvicorn's LOGGING_CONFIG
        assert logging.getLogger("uvicorn").propagate is False
        configure_logging("json", "info", stream=out)
        logging.getLogger("uvicorn.error").warning("Invalid HTTP request %s.", "received")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for n, (handlers, propagate) in saved_loggers.items():
            logging.getLogger(n).handlers[:] = handlers
            logging.getLogger(n).propagate = propagate
    (record,) = _events(out.getvalue())
    assert (
        record["event"] == "Invalid HTTP request received." and record["logger"] == "uvicorn.error"
    )
