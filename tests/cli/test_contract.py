"""The CLI contract, for every subcommand against bad input of every kind.

0 ok, 1 failure (unreachable, refused, unhealthy, unmatched), 2 usage or invalid input;
130/143 when interrupted, 141 when stdout's reader went away; one line on stderr; never a
traceback. Most cases run in-process (``main(argv)``); a few subprocesses cover what
needs a real process: closed pipes and SIGINT at a random moment.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.cli import main
from federation.commands import health
from tests.support.ports import free_port
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = str(ROOT / "clusters.example.yaml")
FEDGATE = [sys.executable, "-m", "federation.cli"]
EXECUTABLE = Path(sys.executable).parent / "fedgate"  # the installed entry point


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No connection settings from the machine; the SIGTERM handler main() installs is
    put back after each test."""
    for var in [v for v in os.environ if v.startswith("FEDGATE_")] + ["NO_COLOR"]:
        monkeypatch.delenv(var, raising=False)
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def closed() -> str:
    return f"127.0.0.1:{free_port()}"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str, *needles: str) -> None:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], err


# --------------------------------------------------------------------- usage (2)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["validate"],
        ["validate", MANIFEST, "--bogus"],
        ["apply"],
        ["serve"],
        ["health", "--interval", "soon"],
        ["health", "--output", "yaml"],
        ["explain"],
        ["explain", "--host"],
        ["demo", "--duration", "x"],
        ["demo", "--rate", "0"],
        ["demo", "--duration", "-5"],
        ["health", "--watch", "--interval", "0"],
        ["health", "--watch", "--interval", "nan"],
        ["health", "--watch", "--interval", "inf"],
        ["render"],
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2
    one_line(err, "fedgate", "--help")


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.startswith("fedgate ") and out.strip() != "fedgate unknown"
    import argparse

    from federation.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) >= {"validate", "render", "apply", "serve", "health", "explain", "demo"}
    for name, command in sub.choices.items():
        for action in command._actions:
            assert action.help, f"fedgate {name} {'/'.join(action.option_strings) or action.dest}"
        code, out, _ = run([name, "--help"], capsys)
        assert code == 0 and out.startswith("usage: fedgate " + name)


# ------------------------------------------------------------- invalid input (2)


@pytest.mark.parametrize("command", ["validate", "render", "apply"])
@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "cannot read"),
        (b"clusters: [\n", "not valid YAML"),
        (b"\xff\xfe\x00binary", "not a text file"),
        (b"- a list\n", "mapping"),
    ],
)
def test_bad_manifests_exit_2(
    command: str,
    content: bytes | None,
    needle: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "m.yaml"
    if content is not None:
        path.write_bytes(content)
    argv = [command, str(path)] + (["--etcd", closed()] if command == "apply" else [])
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    one_line(err, needle)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["apply", MANIFEST, "--etcd", "localhost:abc"], "--etcd"),
        (["apply", MANIFEST, "--etcd", "http://"], "--etcd"),
        (["apply", MANIFEST, "--etcd", "127.0.0.1:1", "--prefix", "no-slash"], "--prefix"),
        (["health", "--etcd", "localhost:abc"], "--etcd"),
        (["health", "--etcd", "127.0.0.1:1", "--prefix", "x"], "--prefix"),
        (["health", "--admin", "ftp://x:1"], "--admin"),
        (["health", "--admin", "http://127.0.0.1:port"], "--admin"),
        (["health", "--admin", "127.0.0.1:1", "--token-file", "/nonexistent/t"], "--token-file"),
        (["explain", "--host", "a"], "--admin"),
        (["explain", "--host", "a", "--admin", "::::"], "--admin"),
        (["demo", "--duration", "1"], "--duration"),
        (["serve", "--config", "/nonexistent/gateway.yaml"], "cannot read"),
    ],
)
def test_bad_arguments_exit_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2, err
    one_line(err, needle)


def test_an_empty_token_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "token"
    token.write_text("\n")
    code, _, err = run(["health", "--admin", closed(), "--token-file", str(token)], capsys)
    assert code == 2
    one_line(err, "--token-file", "one line")


# ------------------------------------------------------------- unreachable (1)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["apply", MANIFEST, "--dry-run"], "etcd"),
        (["health"], "etcd"),
        (["health", "--admin"], "cannot reach the admin API"),
        (["health", "--watch", "--admin"], "cannot reach the admin API"),
        (["explain", "--host", "shop.acme.com", "--admin"], "cannot reach the admin API"),
    ],
)
def test_unreachable_services_exit_1(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*argv, closed()] if argv[-1] == "--admin" else [*argv, "--etcd", closed()]
    started = time.monotonic()
    code, _, err = run(argv, capsys)
    assert code == 1, err
    one_line(err, needle)
    assert time.monotonic() - started < 30


def test_unreachable_vault_at_start_waits_and_says_why(tmp_path: Path) -> None:
    """Issue #13: a gateway started during a Vault outage (no cached material) does not
    exit: it says why in one log line per try and waits; SIGTERM still ends it cleanly."""
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"cluster: c1\nlisten: {{public: '127.0.0.1:0', admin: '127.0.0.1:0'}}\n"
        f"manifest: {MANIFEST}\nvault: {{addr: 'http://{closed()}', auth: {{token: t}}}}\n"
    )
    (tmp_path / "m").mkdir()
    log = tmp_path / "stderr"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [*FEDGATE, "serve", "--config", str(config), "--cluster", "aws-eu-west-1"],
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
        try:
            wait_for(lambda: "vault.unavailable" in log.read_text(), timeout=30,
                     what="the wait's log")  # fmt: skip
            assert proc.poll() is None, log.read_text()  # still waiting, not exited
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert "Traceback" not in text and proc.returncode in (0, 143), (proc.returncode, text)
    first = json.loads(text.splitlines()[0])  # one event per line (not a TTY: JSON)
    assert first["event"] == "vault.unavailable" and first["retry_in"] > 0, text
    assert first["error"].startswith("vault http://"), text


def test_a_bug_is_still_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(args: object) -> int:
        raise RuntimeError("unexpected\nstate")

    monkeypatch.setattr(health, "run", broken)
    code, _, err = run(["health"], capsys)
    assert code == 1
    one_line(err, "internal error: RuntimeError: unexpected state", "FEDGATE_DEBUG")


# ------------------------------------------------------------- output conventions


def test_json_output_is_camel_case(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    code, out, _ = run(["render", MANIFEST], capsys)
    assert code == 0
    doc = json.loads(out)
    keys: set[str] = set()

    def walk(value: object, data: bool = False) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if not data:
                    keys.add(k)
                walk(v, data=k in ("labels", "endpoints"))
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(doc)
    assert "pathPrefix" in keys and "eastWest" in keys and "healthCheck" in keys
    assert not [k for k in keys if "_" in k], keys
    code, out, _ = run(["validate", MANIFEST, "--output", "json"], capsys)
    assert code == 0 and json.loads(out)["valid"] is True


def test_no_colour_into_a_pipe_nor_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    from federation.clikit import use_colour

    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty:
            assert use_colour(tty) is True
            assert use_colour(tty, no_color=True) is False
            monkeypatch.setenv("NO_COLOR", "1")
            assert use_colour(tty) is False
            monkeypatch.delenv("NO_COLOR")
            monkeypatch.setenv("TERM", "dumb")
            assert use_colour(tty) is False
    finally:
        os.close(master)
        os.close(slave)


# ------------------------------------------------------------- processes: pipes, signals


def test_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    """`fedgate render big.yaml | head -c 100`: no BrokenPipeError, exit 141 (SIGPIPE)."""
    r = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {' '.join(FEDGATE)} render {MANIFEST} | head -c 100"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert len(r.stdout) == 100
    assert r.stderr == "" and r.returncode in (0, 141), r.stderr


def _in_main(pid: int) -> bool:
    """The child is inside main(): it has exec'd (before exec, /proc shows the handlers
    copied from this process) and installed its SIGTERM handler."""
    try:
        if b"fedgate" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return False
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # already gone
    caught = int(next(ln for ln in status.splitlines() if ln.startswith("SigCgt:")).split()[1], 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
@pytest.mark.skipif(not EXECUTABLE.exists(), reason="the fedgate entry point is not installed")
def test_sigint_at_a_random_moment(tmp_path: Path) -> None:
    """Ctrl-C anywhere once the command runs: exit 130 (or done), nothing but one line.

    The installed `fedgate` is used: under `python -m federation.cli`, a Ctrl-C that lands
    while the interpreter unwinds runpy can end the process by the signal itself (-2,
    still no traceback)."""
    rng = random.Random(int(os.environ.get("FEDGATE_TEST_SEED", "0")) or None)
    commands = [
        ["apply", MANIFEST, "--etcd", closed()],
        ["health", "--etcd", closed()],
        ["health", "--watch", "--interval", "0.05", "--admin", closed()],
        ["validate", MANIFEST],
        ["render", MANIFEST],
        ["explain", "--host", "a", "--admin", closed()],
    ]
    for argv in commands:
        proc = subprocess.Popen(
            [str(EXECUTABLE), *argv],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            preexec_fn=_default_sigint,
        )  # fmt: skip
        pid = proc.pid
        try:
            wait_for(functools.partial(_in_main, pid), timeout=30, interval=0.005, what="main()")
            time.sleep(rng.uniform(0, 0.3))  # pacing: the random moment
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode in (0, 1, 2, 130), (argv, proc.returncode, err)
        assert "Traceback" not in err and len(err.splitlines()) <= 1, (argv, err)
        if proc.returncode == 130:
            assert err == "", (argv, err)


def test_validate_json_reports_every_problem_with_its_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    path = tmp_path / "m.yaml"
    path.write_text("apiVersion: fedgate/v1\nkind: Federation\nmetadata: {name: x}\nclustrs: []\n")
    code, out, err = run(["validate", str(path), "--output", "json"], capsys)
    assert code == 2 and err == ""
    doc = json.loads(out)
    assert doc["valid"] is False and len(doc["errors"]) >= 2
    first = doc["errors"][0]
    assert set(first) == {"file", "line", "column", "path", "message"}
    assert any("did you mean 'clusters'" in e["message"] for e in doc["errors"]), doc
