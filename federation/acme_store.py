"""Where ACME material lives: Vault KV v2, shared by every gateway of the federation.

``{mount}/acme/account`` holds the account key (JWK JSON) and the account URL, so the
whole federation is one ACME account. ``{mount}/acme/certs/{name}`` holds the issued
chain and key of one name, with its validity and the order URL that produced it. The
orderer writes them; every gateway reads them (the certificate for its SNI contexts,
and -- before ordering -- to learn that another gateway already did).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509

# runs a function of an hvac client: ``VaultSession.call`` (login, renewal, one-line
# errors), or ``lambda fn: fn(client)`` for a bare client
Caller = Callable[[Callable[[Any], Any]], Any]


@dataclass(frozen=True, slots=True)
class AcmeCert:
    name: str
    fullchain_pem: str
    key_pem: str
    not_before: float
    not_after: float
    order_url: str = ""

    @property
    def lifetime(self) -> float:
        return self.not_after - self.not_before

    def renew_at(self, fraction: float = 2 / 3) -> float:
        """When to renew: at ``fraction`` of the lifetime (2/3 by default)."""
        return self.not_before + self.lifetime * fraction


@dataclass(frozen=True, slots=True)
class AcmeAccount:
    key_json: str
    url: str


def validity(fullchain_pem: str) -> tuple[float, float]:
    leaf = x509.load_pem_x509_certificate(fullchain_pem.encode())
    return leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp()


class AcmeStore:
    def __init__(
        self, client: Any = None, *, call: Caller | None = None, mount: str = "secret",
        base: str = "acme",
    ) -> None:  # fmt: skip
        if call is None:
            call = lambda fn: fn(client)  # noqa: E731
        self._call = call
        self._mount = mount
        self._base = base.strip("/")

    def _read(self, path: str) -> dict[str, Any] | None:
        import hvac.exceptions

        try:
            resp = self._call(
                lambda c: c.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=self._mount, raise_on_deleted_version=False
                )
            )
        except hvac.exceptions.InvalidPath:
            return None
        data = (resp or {}).get("data") or {}
        inner = data.get("data")
        return inner if isinstance(inner, dict) else None

    def _write(self, path: str, data: dict[str, Any]) -> None:
        self._call(
            lambda c: c.secrets.kv.v2.create_or_update_secret(
                path=path, secret=data, mount_point=self._mount
            )
        )

    def cert_path(self, name: str) -> str:
        return f"{self._base}/certs/{name.replace('*', '_wildcard_')}"

    def read_cert(self, name: str) -> AcmeCert | None:
        d = self._read(self.cert_path(name))
        if not d or not isinstance(d.get("fullchain"), str) or not isinstance(d.get("key"), str):
            return None
        try:
            nb, na = validity(d["fullchain"])
        except ValueError:
            return None  # a damaged entry is ordered again
        return AcmeCert(name, d["fullchain"], d["key"], nb, na, str(d.get("order", "")))

    def write_cert(self, cert: AcmeCert) -> None:
        self._write(
            self.cert_path(cert.name),
            {"fullchain": cert.fullchain_pem, "key": cert.key_pem, "order": cert.order_url},
        )

    def read_account(self) -> AcmeAccount | None:
        d = self._read(f"{self._base}/account")
        if not d or not isinstance(d.get("key"), str) or not isinstance(d.get("url"), str):
            return None
        return AcmeAccount(d["key"], d["url"])

    def write_account(self, account: AcmeAccount) -> None:
        self._write(f"{self._base}/account", {"key": account.key_json, "url": account.url})
