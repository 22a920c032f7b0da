"""Gateway settings (``gateway.yaml``): file, then ``FEDGATE_*`` environment, then flags.

Every field has a default; unknown keys are errors. :func:`load_settings` is the one
entry point; it raises :class:`SettingsError` with a one-line message on bad input.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from federation.keys import DEFAULT_PREFIX


class SettingsError(Exception):
    """Bad gateway settings: the message is one line, fit for stderr."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def _check_hostport(value: str | None) -> str | None:
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


class Listen(_Model):
    public: str = "0.0.0.0:8080"
    public_tls: str | None = Field(default=None, alias="publicTls")
    east_west: str | None = Field(default="0.0.0.0:15443", alias="eastWest")
    admin: str = "127.0.0.1:9901"

    _hp = field_validator("public", "public_tls", "east_west", "admin")(_check_hostport)


class EtcdTlsSettings(_Model):
    """PEM files: etcd's CA, this gateway's client certificate (CN = its etcd user) and key."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    # issue the client certificate from Vault PKI with this role (CN = the gateway's etcd
    # role, fedgate-gateway-<cluster>), written to cert/key and renewed with the others
    vault_role: str | None = Field(default=None, alias="vaultRole")

    @model_validator(mode="after")
    def _vault_files(self) -> EtcdTlsSettings:
        if self.vault_role and not (self.cert and self.key):
            raise ValueError("vaultRole needs cert and key: where the issued files are written")
        return self


class EtcdSettings(_Model):
    endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)
    prefix: str = DEFAULT_PREFIX
    lease_ttl: float = Field(default=5.0, alias="leaseTtl", gt=0)
    dial_timeout: float = Field(default=2.0, alias="dialTimeout", gt=0)
    tls: EtcdTlsSettings | None = None  # with https:// endpoints
    username: str | None = None  # password authentication (else the certificate's CN)
    password_file: str | None = Field(default=None, alias="passwordFile")

    def client_options(self) -> dict[str, Any]:
        """``EtcdClient`` keyword arguments (``tls``, ``auth``); SettingsError when unusable."""
        from federation.etcd_conn import credentials

        tls = self.tls or EtcdTlsSettings()
        try:
            return credentials(
                cacert=tls.ca,
                cert=tls.cert,
                key=tls.key,
                user=self.username,
                password_file=self.password_file,
            )
        except ValueError as exc:
            raise SettingsError(f"etcd: {exc}") from None

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v.startswith("/") or not v.endswith("/"):
            raise ValueError("must start and end with '/'")
        return v

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one endpoint is needed")
        for e in v:
            if not e.startswith(("http://", "https://")):
                raise ValueError(f"endpoint must be http(s)://host:port, got {e!r}")
        return v


class VaultAuth(_Model):
    method: Literal["token", "approle", "kubernetes"] = "token"
    role: str | None = None  # kubernetes
    token: str | None = None  # token (prefer tokenFile or VAULT_TOKEN)
    token_file: str | None = Field(default=None, alias="tokenFile")
    role_id: str | None = Field(default=None, alias="roleId")  # approle
    secret_id: str | None = Field(default=None, alias="secretId")
    secret_id_file: str | None = Field(default=None, alias="secretIdFile")
    mount: str | None = None  # auth mount path; default: the method's name
    jwt_file: str = Field(
        default="/var/run/secrets/kubernetes.io/serviceaccount/token", alias="jwtFile"
    )


class VaultPki(_Model):
    mount: str = "pki"
    role: str = "fedgate-gateway"
    trust_domain: str = Field(default="fedgate.local", alias="trustDomain")
    server_names: tuple[str, ...] = Field(default=("localhost",), alias="serverNames")
    ttl: str = "24h"


class VaultKv(_Model):
    """Bring your own certificate: a KV v2 secret with `certificate`, `private_key`, `ca`."""

    mount: str = "secret"
    path: str


class VaultSettings(_Model):
    addr: str = "http://127.0.0.1:8200"
    auth: VaultAuth = VaultAuth()
    pki: VaultPki | None = VaultPki()
    kv: VaultKv | None = None
    ca_cert: str | None = Field(default=None, alias="caCert")  # to verify Vault itself
    # development only: a remote http:// Vault (tokens and private keys in clear)
    insecure: bool = False
    # where the last issued material is kept for a start during a Vault outage
    # (default: <snapshot>.tls next to the view snapshot; see docs/security.md)
    material_cache: str | None = Field(default=None, alias="materialCache")

    @field_validator("addr")
    @classmethod
    def _addr(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"expected http(s)://host:port, got {v!r}")
        return v

    @model_validator(mode="after")
    def _remote_http(self) -> VaultSettings:
        if self.addr.startswith("http://") and not self.insecure and not _is_loopback(self.addr):
            raise ValueError(
                f"vault.addr {self.addr} is remote plain HTTP (tokens and keys in clear): "
                "use https://, or set vault.insecure: true for development"
            )
        return self


def _is_loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


MIN_ADMIN_TOKEN_BYTES = 16


class AdminSettings(_Model):
    token_file: str | None = Field(default=None, alias="tokenFile")
    token: str | None = None  # for development; tokenFile or FEDGATE_ADMIN_TOKEN preferred
    # /metrics without the token (it reveals services, clusters, health, certificate expiry)
    public_metrics: bool = Field(default=False, alias="publicMetrics")
    # serve the admin API over TLS with the gateway's Vault-issued public certificate
    tls: bool = False


class Limits(_Model):
    max_header_bytes: int = Field(default=65536, alias="maxHeaderBytes", gt=0)
    header_timeout: float = Field(default=10.0, alias="headerTimeout", gt=0)
    drain_timeout: float = Field(default=15.0, alias="drainTimeout", ge=0)
    max_connections: int | None = Field(default=None, alias="maxConnections")


class Tracing(_Model):
    enabled: bool = True
    otlp_endpoint: str | None = Field(default=None, alias="otlpEndpoint")
    sample_ratio: float = Field(default=1.0, alias="sampleRatio", ge=0, le=1)


class Telemetry(_Model):
    log_format: Literal["json", "console", "auto"] = Field(default="auto", alias="logFormat")
    log_level: str = Field(default="info", alias="logLevel")
    access_log: bool = Field(default=True, alias="accessLog")
    metrics: bool = True
    tracing: Tracing = Tracing()


class GatewaySettings(_Model):
    cluster: str
    id: str | None = None  # default: <cluster>-<hostname>-<pid>
    listen: Listen = Listen()
    etcd: EtcdSettings = EtcdSettings()
    vault: VaultSettings | None = None  # None: no TLS from Vault (development only)
    admin: AdminSettings = AdminSettings()
    snapshot: str | None = None  # path of the last-known-good view
    trusted_proxies: tuple[str, ...] = Field(default=(), alias="trustedProxies")
    limits: Limits = Limits()
    telemetry: Telemetry = Telemetry()
    # development only: east-west in plain HTTP, no mutual TLS (demo and tests without Vault)
    insecure_east_west: bool = Field(default=False, alias="insecureEastWest")
    # development only: a manifest file as the view source instead of etcd
    manifest: str | None = None

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for c in v:
            ipaddress.ip_network(c, strict=False)
        return v

    @property
    def gateway_id(self) -> str:
        return self.id or f"{self.cluster}-{socket.gethostname()}-{os.getpid()}"

    def admin_token(self) -> str | None:
        """The admin bearer token: FEDGATE_ADMIN_TOKEN, then tokenFile, then token."""
        env = os.environ.get("FEDGATE_ADMIN_TOKEN")
        if env is not None and env != "":
            return _checked_token(env.strip(), "FEDGATE_ADMIN_TOKEN")
        if self.admin.token_file:
            path = self.admin.token_file
            try:
                mode = os.stat(path).st_mode
                text = Path(path).read_text().strip()
            except OSError as exc:
                raise SettingsError(f"admin.tokenFile {path}: {exc.strerror}") from None
            if mode & 0o004:
                raise SettingsError(
                    f"admin.tokenFile {path}: readable by every user (chmod 600 or 640 it)"
                )
            return _checked_token(text, f"admin.tokenFile {path}")
        if self.admin.token is not None:
            return _checked_token(self.admin.token, "admin.token")
        return None


def _checked_token(token: str, where: str) -> str:
    if not token:
        raise SettingsError(f"{where}: the admin token is empty")
    if len(token.encode()) < MIN_ADMIN_TOKEN_BYTES:
        raise SettingsError(
            f"{where}: the admin token is too short "
            f"({len(token.encode())} bytes, at least {MIN_ADMIN_TOKEN_BYTES})"
        )
    return token


# environment variable -> dotted settings path (values: strings; lists comma-separated)
ENVIRONMENT: Mapping[str, str] = {
    "FEDGATE_CLUSTER": "cluster",
    "FEDGATE_ID": "id",
    "FEDGATE_ETCD": "etcd.endpoints",
    "FEDGATE_ETCD_PREFIX": "etcd.prefix",
    "FEDGATE_VAULT_ADDR": "vault.addr",
    "FEDGATE_SNAPSHOT": "snapshot",
    "FEDGATE_LISTEN_PUBLIC": "listen.public",
    "FEDGATE_LISTEN_ADMIN": "listen.admin",
    "FEDGATE_LISTEN_EAST_WEST": "listen.eastWest",
}
_LISTS = {"etcd.endpoints", "trustedProxies"}


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for p in parts[:-1]:
        child = node.get(p)
        if not isinstance(child, dict):
            child = {}
            node[p] = child
        node = child
    node[parts[-1]] = value


def load_settings(
    path: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> GatewaySettings:
    """File, then FEDGATE_* environment, then ``overrides`` (dotted path -> value, from flags)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise SettingsError(f"{path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise SettingsError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise SettingsError(f"{path}: expected a mapping at the top level")
        data = loaded
    env = os.environ if environ is None else environ
    for var, dotted in ENVIRONMENT.items():
        if var in env and env[var] != "":
            raw = env[var]
            _set_path(data, dotted, raw.split(",") if dotted in _LISTS else raw)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_path(data, dotted, value)
    try:
        return GatewaySettings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top)"
        where = f"{path}: " if path else ""
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise SettingsError(f"{where}{loc}: {err['msg']}{more}") from None
