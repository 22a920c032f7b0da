"""A Vault (or OpenBao) session for the gateway: login (token, AppRole, Kubernetes) and a
live token, renewed at 2/3 of its TTL or obtained again when it expired or was refused.

``federation.vault`` re-exports :class:`VaultSession` and :class:`VaultError`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import hvac
import hvac.exceptions
import requests

from federation.settings import VaultSettings


class VaultError(Exception):
    """Vault could not give what was needed; the message is one line."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    name = type(exc).__name__
    if isinstance(exc, requests.ConnectionError):
        return "connection refused or unreachable"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    return f"{name}: {first}"[:300] if first else name


# ------------------------------------------------------------------ auth


class VaultSession:
    """An hvac client with a live token: renews it at 2/3 of its TTL, logs in again when
    it expired or Vault refuses it. Synchronous: call it from a worker thread."""

    def __init__(
        self,
        settings: VaultSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 5.0,
    ) -> None:
        self._settings = settings
        self._clock = clock
        verify: bool | str = settings.ca_cert if settings.ca_cert else True
        self.client = hvac.Client(url=settings.addr, timeout=timeout, verify=verify)
        self._token_expires: float | None = None  # None: no expiry (or not logged in)
        self._renew_at: float | None = None
        self._renewable = False
        self._margin = 0.0
        self._logged_in = False
        self.logins = 0  # how many logins so far (tests and status)
        self.renewals = 0

    # -- credentials
    def _read(self, path: str, what: str) -> str:
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError as exc:
            raise VaultError(f"vault auth: {what} {path}: {exc.strerror}") from None

    def _token(self) -> str:
        auth = self._settings.auth
        if auth.token_file:
            return self._read(auth.token_file, "tokenFile")
        token = os.environ.get("VAULT_TOKEN") or auth.token
        if not token:
            raise VaultError(
                "vault auth: method token needs auth.token, auth.tokenFile or VAULT_TOKEN"
            )
        return token

    def login(self) -> None:
        auth = self._settings.auth
        mount = auth.mount or auth.method
        now = self._clock()
        try:
            if auth.method == "token":
                self.client.token = self._token()
                data = self.client.auth.token.lookup_self()["data"]
                ttl = float(data.get("ttl") or 0)
                renewable = bool(data.get("renewable"))
            else:
                if auth.method == "approle":
                    if not auth.role_id:
                        raise VaultError("vault auth: method approle needs auth.roleId")
                    secret_id = auth.secret_id
                    if auth.secret_id_file:
                        secret_id = self._read(auth.secret_id_file, "secretIdFile")
                    resp = self.client.auth.approle.login(
                        role_id=auth.role_id, secret_id=secret_id, mount_point=mount
                    )
                else:  # kubernetes: Vault reviews the JWT with the cluster's TokenReview API
                    if not auth.role:
                        raise VaultError("vault auth: method kubernetes needs auth.role")
                    jwt = self._read(auth.jwt_file, "jwtFile")
                    resp = self.client.auth.kubernetes.login(
                        role=auth.role, jwt=jwt, mount_point=mount
                    )
                info = resp["auth"]
                self.client.token = info["client_token"]
                ttl = float(info.get("lease_duration") or 0)
                renewable = bool(info.get("renewable"))
        except VaultError:
            raise
        except Exception as exc:
            raise VaultError(
                f"vault {self._settings.addr}: {auth.method} login failed: {_one_line(exc)}"
            ) from None
        self.logins += 1
        self._logged_in = True
        self._set_ttl(now, ttl, renewable)

    def _set_ttl(self, now: float, ttl: float, renewable: bool) -> None:
        self._renewable = renewable
        self._margin = min(5.0, ttl * 0.05)  # this close to expiry, log in instead of renewing
        if ttl <= 0:
            self._token_expires = self._renew_at = None
        else:
            self._token_expires = now + ttl
            self._renew_at = now + ttl * 2.0 / 3.0

    def ensure(self) -> None:
        """Make sure the token is live: log in, renew it, or log in again."""
        now = self._clock()
        if not self._logged_in:
            self.login()
            return
        if self._token_expires is not None and now >= self._token_expires - self._margin:
            self.login()  # expired (or about to): renewing is too late
            return
        if self._renew_at is not None and now >= self._renew_at:
            if self._renewable:
                try:
                    info = self.client.auth.token.renew_self()["auth"]
                    self.renewals += 1
                    self._set_ttl(
                        now, float(info.get("lease_duration") or 0), bool(info.get("renewable"))
                    )
                    # Vault caps renewals at the token's max TTL: when the renewal gave
                    # (almost) nothing, the next call logs in again
                    return
                except Exception:
                    pass
            self.login()

    def call(self, fn: Callable[[hvac.Client], Any]) -> Any:
        """``fn(client)`` with a live token; on 403 (token expired or revoked) log in again
        once and retry."""
        self.ensure()
        try:
            return fn(self.client)
        except hvac.exceptions.Forbidden:
            if self._settings.auth.method == "token" and not self._settings.auth.token_file:
                raise  # nothing to log in again with
            self.login()
            return fn(self.client)

    @property
    def token_expires(self) -> float | None:
        return self._token_expires

    @property
    def renew_at(self) -> float | None:
        """When the token should be renewed (None: it does not expire)."""
        return self._renew_at if self._logged_in else None


# ------------------------------------------------------------------ TLS material
