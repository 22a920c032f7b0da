"""Gateway settings (``gateway.yaml``): file, then ``FEDGATE_*`` environment, then flags.

Every field has a default except ``cluster``; unknown keys are errors. The file is read by
the manifest's reader (YAML 1.2: ``yes`` and ``on`` are strings, not booleans) and every
problem is reported with its position, as ``fedgate validate`` reports the manifest's:
``gateway.yaml:LINE:COLUMN: field.path: message`` (with a hint for a misspelt key).
Durations in the file need a unit (``"5s"``, ``"500ms"``), as in the manifest; Python
callers may give seconds as numbers. :func:`load_settings` is the one entry point; it
raises :class:`SettingsError` (``.lines``: one printable line per problem).
The reference of every field and variable is ``docs/gateway.md``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from federation.keys import DEFAULT_PREFIX
from federation.manifest.loader import issues_from_validation
from federation.manifest.source import Document, SourceError, read_yaml
from federation.manifest.values import parse_duration

MAX_BYTES = 1024 * 1024


class SettingsError(Exception):
    """Bad gateway settings. ``lines``: one printable line per problem (at least one);
    the message is the first line (and how many more), fit for one line on stderr."""

    def __init__(self, message: str | None = None, *, lines: tuple[str, ...] = ()) -> None:
        self.lines: tuple[str, ...] = lines or (str(message),)
        more = f" (and {len(self.lines) - 1} more)" if len(self.lines) > 1 else ""
        super().__init__(self.lines[0] + more)


def _duration(value: Any, info: ValidationInfo, *, allow_zero: bool) -> float:
    """A duration with a unit ("5s", "500ms"); a bare number only from Python code."""
    from_file = bool(info.context and info.context.get("file"))
    if not from_file and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        return parse_duration(value, allow_zero=allow_zero)
    except ValueError as exc:
        raise PydanticCustomError("fedgate", "{message}", {"message": str(exc)}) from None


def _positive_duration(value: Any, info: ValidationInfo) -> float:
    return _duration(value, info, allow_zero=False)


def _duration_or_zero(value: Any, info: ValidationInfo) -> float:
    return _duration(value, info, allow_zero=True)


Duration = Annotated[float, BeforeValidator(_positive_duration)]
DurationOrZero = Annotated[float, BeforeValidator(_duration_or_zero)]
Bool = Annotated[bool, Strict()]  # `yes` is a string in YAML 1.2, not true


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
    dns: str | None = None  # authoritative DNS, UDP and TCP on the same port; None: off

    _hp = field_validator("public", "public_tls", "east_west", "admin", "dns")(_check_hostport)


class AcmeEab(_Model):
    """External Account Binding: the key id and the file holding the base64url HMAC key."""

    kid: str
    hmac_key_file: str = Field(alias="hmacKeyFile")


class AcmeSettings(_Model):
    """Public certificates by ACME for the hosts marked ``tls: acme`` (docs/tls.md)."""

    directory: str = "https://acme-staging-v02.api.letsencrypt.org/directory"
    email: str | None = None
    eab: AcmeEab | None = None
    challenge: Literal["http-01", "tls-alpn-01", "dns-01"] = "http-01"
    # the etcd lease of the per-name order lock: a dead orderer is replaced after it
    lock_ttl: Duration = Field(default=10.0, alias="lockTtl")

    @field_validator("directory")
    @classmethod
    def _directory(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"expected the http(s):// URL of an ACME directory, got {v!r}")
        return v


class DnsSettings(_Model):
    """The authoritative DNS listener (``listen.dns``); see docs/dns.md."""

    # host:port published in the gateway record: the NS glue other gateways answer with;
    # default: the bound address of listen.dns (when it is not a wildcard address)
    advertise: str | None = None
    # response-rate limiting per client network (/24, /56): responses per second, 0: off
    responses_per_second: float = Field(default=100.0, alias="responsesPerSecond", ge=0)
    burst: int = Field(default=200, ge=1)
    # of the responses over the limit, every slip-th goes out truncated (TC: ask over
    # TCP) instead of being dropped, so a real client behind a spoofed flood still gets in
    slip: int = Field(default=2, ge=0)

    _hp = field_validator("advertise")(_check_hostport)


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
    lease_ttl: Duration = Field(default=5.0, alias="leaseTtl")
    dial_timeout: Duration = Field(default=2.0, alias="dialTimeout")
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
        from federation.etcd import EtcdClient

        EtcdClient(v)  # refuses here what the client would refuse at start (no connection)
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
    header_timeout: Duration = Field(default=10.0, alias="headerTimeout")
    drain_timeout: DurationOrZero = Field(default=15.0, alias="drainTimeout")
    max_connections: int | None = Field(default=None, alias="maxConnections")


class Tracing(_Model):
    enabled: Bool = True
    otlp_endpoint: str | None = Field(default=None, alias="otlpEndpoint")
    sample_ratio: float = Field(default=1.0, alias="sampleRatio", ge=0, le=1)


class Telemetry(_Model):
    log_format: Literal["json", "console", "auto"] = Field(default="auto", alias="logFormat")
    log_level: str = Field(default="info", alias="logLevel")
    access_log: Bool = Field(default=True, alias="accessLog")
    metrics: Bool = True
    # cardinality budget: at most this many (service, cluster) pairs reported one by one
    metrics_per_pair: int = Field(default=1000, alias="metricsPerPair", ge=0, le=100_000)
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
    dns: DnsSettings = DnsSettings()
    acme: AcmeSettings | None = None  # None: no ACME (hosts marked tls: acme keep Vault PKI)
    # development only: east-west in plain HTTP, no mutual TLS (demo and tests without Vault)
    insecure_east_west: Bool = Field(default=False, alias="insecureEastWest")
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
    "FEDGATE_LISTEN_DNS": "listen.dns",
}
_LISTS = {"etcd.endpoints", "trustedProxies"}
# the `fedgate serve` flag behind each override (for error lines)
_FLAGS = {
    "cluster": "--cluster",
    "etcd.endpoints": "--etcd",
    "etcd.prefix": "--prefix",
    "vault.addr": "--vault-addr",
}


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
    """File, then FEDGATE_* environment, then ``overrides`` (dotted path -> value, from flags).

    Raises :class:`SettingsError` with every problem: in the file at its line and column,
    in a variable or flag under its name."""
    name = str(path) if path is not None else "<settings>"
    doc = Document({}, name)
    if path is not None:
        doc = _read(path)
        if doc.data is None:
            doc.data = {}
        if not isinstance(doc.data, dict):
            raise SettingsError(f"{name}:1:1: (top): expected a mapping of settings")
    data: dict[str, Any] = doc.data
    origin: dict[str, str] = {}  # dotted path -> the variable or flag that set it
    env = os.environ if environ is None else environ
    for var, dotted in ENVIRONMENT.items():
        if var in env and env[var] != "":
            raw = env[var]
            _set_path(data, dotted, raw.split(",") if dotted in _LISTS else raw)
            origin[dotted] = var
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_path(data, dotted, value)
            origin[dotted] = _FLAGS.get(dotted, "a flag")
    try:
        return GatewaySettings.model_validate(data, context={"file": path is not None})
    except ValidationError as exc:
        issues_from_validation(doc, exc, GatewaySettings)
    lines = ["invalid settings"] if not doc.issues else []
    for issue in sorted(doc.issues):
        setter = next((o for d, o in origin.items() if issue.path.startswith(d)), None)
        lines.append(
            f"{setter}: {issue.path}: {issue.message}" if setter or path is None else str(issue)
        )
    raise SettingsError(lines=tuple(lines))


def _read(path: str | Path) -> Document:
    name = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise SettingsError(f"{name}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise SettingsError(f"{name}: larger than {MAX_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"{name}: not a text file (expected UTF-8 YAML)") from None
    if not text.strip() or all(
        line.lstrip().startswith("#") or not line.strip() for line in text.splitlines()
    ):
        return Document({}, name)
    try:
        return read_yaml(text, filename=name)
    except SourceError as exc:
        raise SettingsError(str(exc.issue)) from None
