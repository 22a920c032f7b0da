"""The data plane's own settings: what ``gateway/`` needs from the process settings.

The composition root (``fedgate serve``) builds one :class:`DataPlaneSettings` from the
process settings (:meth:`DataPlaneSettings.from_settings`); ``gateway/`` never imports
``federation.settings``. Every field has the default the data plane runs with.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field
from typing import Any

# a cap on client connections per listener when none is configured: well under the
# process's file-descriptor limit (each proxied request also holds an upstream socket)
DEFAULT_MAX_CONNECTIONS_CEILING = 10000


def fd_budget() -> int:
    """File descriptors the process can have: the hard limit (``raise_fd_limit`` lifts the
    soft one to it at start-up), at most 65536."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):  # pragma: no cover - every Linux has it
        return 1024
    if hard == resource.RLIM_INFINITY or hard <= 0:
        hard = 65536
    return max(soft, min(hard, 65536))


def raise_fd_limit() -> None:
    """Lift the soft file-descriptor limit to :func:`fd_budget` (a gateway holds two
    sockets per proxied request)."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = fd_budget()
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (OSError, ValueError):  # not allowed here: keep the soft limit
        pass


def default_max_connections() -> int:
    """40 % of the descriptors (each client connection may hold an upstream one too),
    at most 10,000 per listener."""
    return max(64, min(DEFAULT_MAX_CONNECTIONS_CEILING, int(fd_budget() * 0.4)))


@dataclass(frozen=True, slots=True)
class Listeners:
    public: str = "0.0.0.0:8080"
    public_tls: str | None = None
    east_west: str | None = "0.0.0.0:8443"
    admin: str = "127.0.0.1:9901"


@dataclass(frozen=True, slots=True)
class DataPlaneLimits:
    max_header_bytes: int = 65536  # request head (target + names + values) -> 431
    header_timeout: float = 10.0  # request head; also the idle limit between body pieces
    drain_timeout: float = 15.0
    max_connections: int = field(default_factory=default_max_connections)  # per listener
    keep_alive_timeout: float = 60.0  # idle client keep-alive connections
    max_response_head_bytes: int = 65536  # an upstream's response head -> 502 past it
    max_response_headers: int = 200  # an upstream's response header count -> 502 past it


@dataclass(frozen=True, slots=True)
class DataPlaneSettings:
    cluster: str
    listen: Listeners = Listeners()
    trusted_proxies: tuple[str, ...] = ()
    insecure_east_west: bool = False  # development: east-west in plain HTTP
    trust_domain: str | None = None  # the SPIFFE trust domain of gateway certificates
    limits: DataPlaneLimits = DataPlaneLimits()
    fast_path: bool = True  # serve plain GETs by callbacks (False: always the ASGI path)
    admin_tls: bool = False  # the admin listener with the Vault-issued public certificate

    @classmethod
    def from_settings(cls, s: Any) -> DataPlaneSettings:
        """From the process settings (``federation.settings.GatewaySettings``: read by
        attribute, so the data plane does not import the control plane's settings)."""
        if isinstance(s, DataPlaneSettings):
            return s
        pki = s.vault.pki if s.vault is not None else None
        lim = s.limits
        return cls(
            cluster=s.cluster,
            listen=Listeners(
                public=s.listen.public,
                public_tls=s.listen.public_tls,
                east_west=s.listen.east_west,
                admin=s.listen.admin,
            ),
            trusted_proxies=tuple(s.trusted_proxies),
            insecure_east_west=bool(s.insecure_east_west),
            trust_domain=pki.trust_domain if pki is not None else None,
            admin_tls=bool(s.admin.tls),
            limits=DataPlaneLimits(
                max_header_bytes=lim.max_header_bytes,
                header_timeout=lim.header_timeout,
                drain_timeout=lim.drain_timeout,
                max_connections=(
                    lim.max_connections
                    if lim.max_connections is not None and lim.max_connections > 0
                    else default_max_connections()
                ),
            ),
        )
