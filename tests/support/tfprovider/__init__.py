"""Schema-only Terraform providers for hashicorp/kubernetes and hashicorp/vault, so that
``terraform validate`` and ``terraform test`` (``mock_provider``) run without the
registry.

``install_mirror(dest)`` lays out a filesystem mirror (Terraform's "unpacked" layout,
``HOST/NAMESPACE/TYPE/VERSION/OS_ARCH/terraform-provider-TYPE``) whose executables start
:mod:`.server` with this interpreter; a CLI configuration with
``provider_installation { filesystem_mirror { path = dest } }`` then makes
``terraform init`` install them instead of asking the registry.
"""

from __future__ import annotations

import platform
import shlex
import sys
from pathlib import Path

from tests.support.tfprovider import kubernetes, vault

REPO = Path(__file__).resolve().parents[3]

PROVIDERS = {
    "kubernetes": (kubernetes.SOURCE, kubernetes.VERSION),
    "vault": (vault.SOURCE, vault.VERSION),
}

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def target() -> str:
    """Terraform's name for this platform: linux_amd64, linux_arm64, darwin_arm64..."""
    machine = platform.machine().lower()
    return f"{sys.platform.removesuffix('2')}_{_ARCH.get(machine, machine)}"


def install_mirror(dest: Path) -> Path:
    """Write the mirror under ``dest``; returns ``dest``. Each package holds the launcher,
    the encoded schema and the server's TLS key and certificate (made here once: the
    server then imports nothing but grpc when Terraform starts it)."""
    from tests.support.tfprovider import server, tls

    schemas = {"kubernetes": kubernetes.SCHEMA, "vault": vault.schema()}
    key_pem, cert_pem = tls.self_signed()
    for name, (source, version) in PROVIDERS.items():
        package = dest / source / version / target()
        package.mkdir(parents=True, exist_ok=True)
        (package / server.SCHEMA_FILE).write_bytes(schemas[name].encode())
        key = package / server.KEY_FILE
        key.touch(mode=0o600)
        key.write_bytes(key_pem)
        (package / server.CERT_FILE).write_bytes(cert_pem)
        launcher = package / f"terraform-provider-{name}_v{version}"
        launcher.write_text(
            "#!/bin/sh\n"
            "# fedgate tests: a schema-only provider (tests/support/tfprovider)\n"
            f"exec {shlex.quote(sys.executable)} {shlex.quote(str(Path(server.__file__)))} "
            f"{name} {shlex.quote(str(package))}\n"
        )
        launcher.chmod(0o755)
    return dest


def cli_config(mirror: Path) -> str:
    """A CLI configuration that installs every provider from ``mirror`` and none from a
    registry (a provider missing there fails ``terraform init`` at once)."""
    return f'provider_installation {{\n  filesystem_mirror {{\n    path = "{mirror}"\n  }}\n}}\n'
