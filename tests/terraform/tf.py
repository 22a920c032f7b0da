"""Run the ``terraform`` CLI in tests: a private CLI configuration, data dir and state.

The machine's environment sets ``TF_CLI_CONFIG_FILE`` to a file that does not exist, so
every terraform command warns "There are some problems with the CLI configuration".
:class:`Terraform` points ``TF_CLI_CONFIG_FILE`` at a file of its own whose
``provider_installation`` block installs hashicorp/kubernetes and hashicorp/vault from a
filesystem mirror: the schema-only providers of tests/support/tfprovider (written into
the test's temporary directory), or a mirror of the real ones named by
``FEDGATE_TF_MIRROR``. It keeps ``.terraform`` in a temporary ``TF_DATA_DIR`` and turns
off the update check, so the tests need no registry, depend on nothing in the user's
configuration and write nothing into the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.tfprovider import cli_config, install_mirror

REPO = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = REPO / "terraform"
EXAMPLE_MANIFEST = REPO / "clusters.example.yaml"


def terraform_binary() -> str | None:
    return shutil.which("terraform")


# why the tests that run terraform skip on a machine without it (Debian does not package
# Terraform, and .ci/run downloads no binaries)
NO_TERRAFORM = (
    "the terraform CLI (>= 1.7) is not on PATH: Debian does not package it; install "
    "a terraform binary to run the Terraform tests"
)


def terraform_version() -> tuple[int, ...]:
    """The installed terraform's version, (1, 11, 4); () without the binary."""
    binary = terraform_binary()
    if binary is None:
        return ()
    proc = subprocess.run(
        [binary, "version", "-json"], capture_output=True, text=True, timeout=60, check=False
    )
    version = json.loads(proc.stdout)["terraform_version"] if proc.returncode == 0 else "0"
    return tuple(int(part) for part in version.split("-")[0].split("."))


def provider_mirror(workdir: Path) -> Path:
    """FEDGATE_TF_MIRROR (a mirror of the real providers) if set, else the schema-only
    providers installed under ``workdir``."""
    env = os.environ.get("FEDGATE_TF_MIRROR")
    if env:
        return Path(env)
    return install_mirror(workdir / "mirror")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class Terraform:
    """One isolated terraform environment under ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        binary = terraform_binary()
        if binary is None:
            raise RuntimeError("terraform is not installed")
        self.binary = binary
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.cli_config = workdir / "terraformrc"
        self.mirror = provider_mirror(workdir)
        self.cli_config.write_text(cli_config(self.mirror))

    def env(self, data_dir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
        env.update(
            {
                "TF_CLI_CONFIG_FILE": str(self.cli_config),
                "TF_DATA_DIR": str(data_dir),
                "TF_IN_AUTOMATION": "1",
                "TF_INPUT": "0",
                "CHECKPOINT_DISABLE": "1",
                "NO_COLOR": "1",
            }
        )
        return env

    def run(
        self, *args: str, cwd: Path, timeout: float = 120, data_dir: Path | None = None
    ) -> Result:
        data = data_dir or (self.workdir / "data" / cwd.name)
        data.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [self.binary, *args],
            cwd=cwd,
            env=self.env(data),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)


def copy_tree(dest: Path) -> Path:
    """A copy of terraform/ and the example manifest, same relative layout; returns the copy."""
    shutil.copytree(
        TERRAFORM_DIR,
        dest / "terraform",
        ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", ".terraform.lock.hcl"),
    )
    if EXAMPLE_MANIFEST.exists():
        shutil.copy(EXAMPLE_MANIFEST, dest / "clusters.example.yaml")
        # what the operator runs first: `fedgate render clusters.yaml > federation.json`
        example = dest / "terraform" / "examples" / "multi-cluster"
        (example / "federation.json").write_text(render_json(EXAMPLE_MANIFEST))
    return dest / "terraform"


def render_json(manifest: Path) -> str:
    """``fedgate render MANIFEST``: the JSON the settings module reads."""
    proc = subprocess.run(
        [sys.executable, "-m", "federation.cli", "render", str(manifest)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def hcl(path: Path) -> Any:
    """A .tf file parsed by python-hcl2, with its quoting and bookkeeping keys removed."""
    import hcl2

    with open(path) as f:
        return _clean(hcl2.load(f))


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _clean(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            _unquote(k): _clean(v)
            for k, v in node.items()
            if k not in ("__is_block__", "__comments__", "__inline_comments__")
        }
    if isinstance(node, list):
        return [_clean(v) for v in node]
    if isinstance(node, str):
        return _unquote(node)
    return node


def resources(parsed: Any) -> dict[str, dict[str, Any]]:
    """``{"type.name": body}`` of every resource block of a parsed file."""
    out: dict[str, dict[str, Any]] = {}
    for block in parsed.get("resource", []):
        for rtype, named in block.items():
            for name, body in named.items():
                out[f"{rtype}.{name}"] = body
    return out


def block(body: dict[str, Any], *path: str) -> Any:
    """Follow nested single blocks: ``block(dep, "spec", "template", "spec")``."""
    node: Any = body
    for part in path:
        node = node[part]
        if isinstance(node, list) and len(node) == 1 and isinstance(node[0], dict):
            node = node[0]
    return node
