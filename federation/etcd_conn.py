"""One gRPC connection to one etcd member: plain or TLS (mutual), with etcd authentication.

Credentials, in the order etcd itself applies them:

- **client certificate** (``EtcdTls.cert`` + ``key``): with ``--client-cert-auth`` etcd
  takes the certificate's Common Name as the user; no token, nothing to refresh;
- **username/password** (``EtcdAuth``): ``Authenticate`` returns a token sent as the
  ``token`` metadata of every call. etcd's simple tokens expire (``--auth-token-ttl``,
  300 s by default) and a JWT token at its ``exp``; a call refused with
  ``UNAUTHENTICATED`` / "invalid auth token" re-authenticates once and is retried
  (:meth:`Connection.refresh`).

``https://`` endpoints verify the member against ``EtcdTls.ca`` (the system roots when
no CA is given). Certificate files are read at every (re)connect, so a rotated client
certificate (Vault PKI or the site's own tooling rewriting the files) is picked up by
the next connection without a restart: :meth:`EtcdClient.reload_tls` closes the
channels, the next call reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aetcd.rpc as rpc
import grpc

__all__ = ["Connection", "EtcdAuth", "EtcdTls", "credentials", "parse_target", "read_secret_file"]


@dataclass(frozen=True, slots=True)
class EtcdTls:
    """PEM files: the CA that signed the members' certificates, our certificate and key."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("etcd TLS: a client certificate needs its key (and vice versa)")

    def stamp(self) -> tuple[tuple[int, int], ...]:
        """(mtime, size) of each file: changes when a file is rewritten (rotation)."""
        out = []
        for path in (self.ca, self.cert, self.key):
            try:
                st = os.stat(path) if path else None
            except OSError:
                st = None
            out.append((st.st_mtime_ns, st.st_size) if st else (0, 0))
        return tuple(out)

    def credentials(self) -> grpc.ChannelCredentials:
        """Read the files now (a rotated certificate is read at the next connect)."""

        def read(path: str | None, what: str) -> bytes | None:
            if path is None:
                return None
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise ValueError(f"etcd TLS {what} {path}: {exc.strerror}") from None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca, "CA"),
            private_key=read(self.key, "key"),
            certificate_chain=read(self.cert, "certificate"),
        )


@dataclass(frozen=True, slots=True)
class EtcdAuth:
    """etcd user and password (role-based access; see ``fedgate etcd-bootstrap``)."""

    username: str
    password: str

    def __repr__(self) -> str:  # never print the password
        return f"EtcdAuth(username={self.username!r})"


def parse_target(endpoint: str) -> tuple[str, str, int]:
    """``https://host:2379`` -> (scheme, host, port); a bare ``host:port`` is http."""
    url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    if url.scheme not in ("http", "https"):
        raise ValueError(f"unsupported etcd endpoint scheme (http or https): {endpoint}")
    if not url.hostname:
        raise ValueError(f"not an etcd endpoint: {endpoint!r}")
    try:
        port = url.port or 2379
    except ValueError:
        raise ValueError(f"not an etcd endpoint: {endpoint!r}") from None
    return url.scheme, url.hostname, port


class Connection:
    """The channel and stubs for one member, and the metadata every call carries."""

    def __init__(
        self,
        endpoint: str,
        *,
        options: dict[str, Any],
        tls: EtcdTls | None,
        auth: EtcdAuth | None,
        base_metadata: tuple[tuple[str, str], ...],
        timeout: float,
    ) -> None:
        scheme, host, port = parse_target(endpoint)
        self._target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._secure = scheme == "https"
        self._options = options
        self._tls = tls
        self._auth = auth
        self._base = base_metadata
        self._timeout = timeout
        self._lock = asyncio.Lock()
        self.channel: Any = None
        self.kvstub: Any = None
        self.leasestub: Any = None
        self.authstub: Any = None
        self.metadata: tuple[tuple[str, str], ...] = base_metadata
        self._token_ok = False

    async def connect(self) -> None:
        """Create the channel (no I/O yet)."""
        if self.channel is not None:
            return
        opts = list(self._options.items())
        if self._secure:
            creds = (self._tls or EtcdTls()).credentials()
            self.channel = grpc.aio.secure_channel(self._target, creds, options=opts)
        else:
            self.channel = grpc.aio.insecure_channel(self._target, options=opts)
        self.kvstub = rpc.KVStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.authstub = rpc.AuthStub(self.channel)

    async def authenticate(self) -> None:
        """Get a token for the user (once per connection, again after a refusal)."""
        if self._auth is None or self._token_ok:
            return
        async with self._lock:
            if self._token_ok:
                return
            await self.connect()
            req = rpc.AuthenticateRequest(name=self._auth.username, password=self._auth.password)
            try:
                resp = await self.authstub.Authenticate(req, timeout=self._timeout)
            except grpc.aio.AioRpcError as exc:
                if "authentication is not enabled" not in (exc.details() or ""):
                    raise
                self.metadata = self._base  # auth off (before etcd-bootstrap): no token
            else:
                self.metadata = (*self._base, ("token", str(resp.token)))
            self._token_ok = True

    def refresh(self) -> bool:
        """The token was refused: the next call authenticates again. False without a user."""
        if self._auth is None:
            return False
        self._token_ok = False
        return True

    async def close(self) -> None:
        channel, self.channel = self.channel, None
        self._token_ok = False
        self.metadata = self._base
        if channel is not None:
            with contextlib.suppress(Exception):  # closing a broken channel
                await channel.close()


def read_secret_file(path: str, what: str) -> str:
    """A password or token file: one line, not empty, not readable by others."""
    try:
        st = os.stat(path)
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"{what} {path}: {exc.strerror}") from None
    if st.st_mode & 0o007:
        raise ValueError(f"{what} {path}: readable by every user (chmod 600 it)")
    if not text:
        raise ValueError(f"{what} {path}: empty")
    return text


def credentials(
    *,
    cacert: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    user: str | None = None,
    password_file: str | None = None,
) -> dict[str, Any]:
    """``EtcdClient`` keyword arguments (``tls``, ``auth``) from file paths and a user name."""
    out: dict[str, Any] = {}
    if cacert or cert or key:
        out["tls"] = EtcdTls(ca=cacert or None, cert=cert or None, key=key or None)
    if user or password_file:
        if not (user and password_file):
            raise ValueError("etcd user and password file go together")
        out["auth"] = EtcdAuth(user, read_secret_file(password_file, "etcd password file"))
    return out
