"""The gateway image's Dockerfile, checked by parsing it.

Docker cannot run on this machine, so `docker build` is not exercised here; these
tests check what the image promises: multi-stage, python:3.11-slim, a wheel built in
the first stage, no compiler in the final stage, a non-root user, the entry point, the
ports, and a .dockerignore that lets in exactly what the build needs.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"

BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "clang", "cc ")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARGs, stages) of a Dockerfile: continuation lines joined, comments dropped."""
    lines: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        lines.append(buf + line)
        buf = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        op, _, rest = line.partition(" ")
        op = op.upper()
        rest = rest.strip()
        if op == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert m, line
            base = m.group(1)
            for k, v in args.items():
                base = base.replace("${" + k + "}", v).replace("$" + k, v)
            stages.append(Stage(base=base, name=m.group(2)))
        elif not stages:
            if op == "ARG" and "=" in rest:
                k, v = rest.split("=", 1)
                args[k.strip()] = v.strip()
        else:
            stages[-1].instructions.append((op, rest))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())[1]


def test_multi_stage_on_python_311_slim(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    assert all(s.base == "python:3.11-slim" for s in stages)
    build, final = stages[0], stages[-1]
    assert any("pip wheel" in r for r in build.all("RUN")), "the first stage builds the wheels"
    install = " ".join(final.all("RUN"))
    assert "--no-index" in install and "fedgate" in install, "installs only from built wheels"
    assert f"from={build.name}" in install or any(
        f"--from={build.name}" in c for c in final.all("COPY")
    )


def test_final_stage_has_no_build_tools(stages: list[Stage]) -> None:
    final = stages[-1]
    text = " ".join(arg for _, arg in final.instructions)
    for tool in BUILD_TOOLS:
        assert tool not in text, f"{tool!r} in the final stage"
    assert "apt-get install" not in text
    # and the build stage is where the compiler lives
    assert "build-essential" in " ".join(stages[0].all("RUN"))


def test_runs_as_a_non_root_user(stages: list[Stage]) -> None:
    final = stages[-1]
    users = final.all("USER")
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    if user.isdigit():
        assert int(user) >= 1000
    setup = " ".join(final.all("RUN"))
    assert "useradd" in setup and f"--uid {user}" in setup
    # nothing after USER switches back to root
    last_user = max(i for i, (op, _) in enumerate(final.instructions) if op == "USER")
    assert all(op != "USER" for op, _ in final.instructions[last_user + 1 :])


def test_entrypoint_cmd_ports_and_no_healthcheck(stages: list[Stage]) -> None:
    final = stages[-1]
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["fedgate"]
    assert json.loads(final.all("CMD")[-1]) == ["serve", "--config", "/etc/fedgate/gateway.yaml"]
    ports = {int(p) for e in final.all("EXPOSE") for p in e.split()}
    assert ports == {8080, 8443, 15443, 9901}
    assert final.all("HEALTHCHECK") == ["NONE"], "Kubernetes probes /healthz and /readyz"


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    ignored = False
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.rstrip("/")
        if (
            p == "**"
            or fnmatch.fnmatch(path, p)
            or path.startswith(p + "/")
            or fnmatch.fnmatch(path, p.replace("**/", "*/"))
            or fnmatch.fnmatch(path.rsplit("/", 1)[-1], p.replace("**/", ""))
        ):
            ignored = not neg
    return ignored


def test_dockerignore_sends_what_the_build_copies(stages: list[Stage]) -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [
        src
        for op, arg in stages[0].instructions
        if op == "COPY" and "--from" not in arg
        for src in arg.split()[:-1]
    ]
    assert copied
    for src in copied:
        assert not _ignored(src.rstrip("/"), patterns), f"{src} is copied but ignored"
    # the packages setuptools builds are all sent, and nothing heavy is
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    for pkg in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        top = pkg.rstrip("*").rstrip(".")
        assert any(c.rstrip("/") == top for c in copied), f"package {top} not copied"
    for heavy in (".venv", ".git", "tests", "bench", "terraform", "federation/__pycache__"):
        assert _ignored(heavy, patterns), f"{heavy} would be sent to the build"
