"""TLS material from Vault (or OpenBao): auth, PKI issue and renewal, KV v2 "bring your own".

:class:`VaultTls` logs in (token, AppRole or Kubernetes), issues two certificates from
the PKI engine -- the public server certificate (SANs from ``vault.pki.serverNames``
plus ``public_names``) and the east-west certificate whose only URI SAN is
``spiffe://<trustDomain>/cluster/<cluster>/gateway`` -- and loads them into the
:class:`gateway.tls.TlsContexts` it built once. :meth:`VaultTls.run` renews both at
about two thirds of their lifetime (jittered), and on failure retries with jittered
exponential backoff, while the listeners keep serving the material they hold.

With ``vault.kv`` set, the public certificate comes from a KV v2 secret (fields
``certificate``, ``private_key``, ``ca``) instead, re-read on the same schedule and on
every ``kv_refresh`` seconds; without ``vault.pki`` that certificate serves east-west too.

hvac is synchronous: every Vault call runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from federation import tls_cache
from federation.backoff import backoff_delay as backoff_delay  # the one backoff
from federation.logging import get_logger
from federation.settings import GatewaySettings, VaultSettings
from federation.vault_session import VaultError as VaultError
from federation.vault_session import VaultSession as VaultSession
from federation.vault_session import _one_line
from gateway.tls import (
    CertificateMaterial,
    TlsContexts,
    build_contexts,
    gateway_spiffe_id,
    install,
)

log = get_logger(__name__)

# ------------------------------------------------------------------ pure helpers


@dataclass(frozen=True, slots=True)
class EtcdClientCert:
    """An etcd client certificate to issue from Vault PKI with the other certificates."""

    role: str  # the PKI role (its allowed_domains should be exactly the etcd role names)
    common_name: str  # etcd's user: fedgate-gateway-<cluster>
    cert: str  # files it is written to (0600), read by the etcd client
    key: str


def etcd_client_cert(settings: GatewaySettings) -> EtcdClientCert | None:
    """What ``etcd.tls.vaultRole`` asks for, or None."""
    tls = settings.etcd.tls
    if tls is None or not tls.vault_role:
        return None
    if settings.vault is None or settings.vault.pki is None:
        raise VaultError("etcd.tls.vaultRole needs vault.pki (the PKI mount that issues it)")
    assert tls.cert is not None and tls.key is not None  # checked by the settings
    from federation.keys import Writer, role_name

    cn = role_name(Writer.GATEWAY, settings.cluster)
    return EtcdClientCert(role=tls.vault_role, common_name=cn, cert=tls.cert, key=tls.key)


@dataclass(frozen=True, slots=True)
class IssuedCert:
    material: CertificateMaterial
    serial: str  # colon-separated hex, as Vault shows it
    not_before: float  # unix seconds
    not_after: float
    issued_at: float  # our clock when it arrived


def describe(material: CertificateMaterial, *, issued_at: float) -> IssuedCert:
    """Serial and validity of the leaf certificate of ``material``."""
    try:
        cert = x509.load_pem_x509_certificate(material.certificate.encode())
    except ValueError as exc:
        raise VaultError(f"not a PEM certificate: {exc}") from None
    return IssuedCert(
        material=material,
        serial=format_serial(cert.serial_number),
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
        issued_at=issued_at,
    )


def format_serial(n: int) -> str:
    """A serial number as Vault writes it: lower-case hex byte pairs joined by ':'."""
    h = f"{n:x}"
    if len(h) % 2:
        h = "0" + h
    return ":".join(h[i : i + 2] for i in range(0, len(h), 2))


def renewal_delay(
    *, issued_at: float, not_after: float, now: float, rng: random.Random, jitter: float = 0.05
) -> float:
    """Seconds from ``now`` until renewal: at 2/3 of the lifetime, +-``jitter`` of it."""
    life = max(0.0, not_after - issued_at)
    at = issued_at + life * (2.0 / 3.0 + rng.uniform(-jitter, jitter))
    return max(0.0, at - now)


def _split_names(names: Sequence[str]) -> tuple[list[str], list[str]]:
    dns: list[str] = []
    ips: list[str] = []
    for n in names:
        try:
            ipaddress.ip_address(n)
            ips.append(n)
        except ValueError:
            dns.append(n)
    return dns, ips


def _pki_material(data: Mapping[str, Any]) -> CertificateMaterial:
    chain = data.get("ca_chain") or [data.get("issuing_ca", "")]
    leaf = data["certificate"].strip() + "\n"
    # the chain goes with the leaf so clients that only hold the root can build it
    intermediates = [c.strip() + "\n" for c in chain[:-1]] if len(chain) > 1 else []
    return CertificateMaterial(
        certificate=leaf + "".join(intermediates),
        private_key=data["private_key"].strip() + "\n",
        ca_bundle="".join(c.strip() + "\n" for c in chain if c),
    )


class VaultTls:
    """The gateway's TLS material from Vault, kept fresh; see the module docstring."""

    def __init__(
        self,
        settings: VaultSettings,
        *,
        cluster: str,
        gateway_id: str,
        public_names: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = asyncio.sleep,
        rng: random.Random | None = None,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        kv_refresh: float = 300.0,
        timeout: float = 5.0,
        on_status: Callable[[dict[str, object]], None] | None = None,
        cache_path: str | None = None,
        etcd_client: EtcdClientCert | None = None,
    ) -> None:
        if settings.pki is None and settings.kv is None:
            raise VaultError("vault: neither vault.pki nor vault.kv is set: no certificate source")
        self._settings = settings
        self.cluster = cluster
        self.gateway_id = gateway_id
        names = list(settings.pki.server_names if settings.pki else ())
        names += [n for n in public_names if n not in names]
        self.public_names = tuple(names)
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._kv_refresh = kv_refresh
        self._on_status = on_status
        self.session = VaultSession(settings, clock=clock, timeout=timeout)
        self.contexts: TlsContexts | None = None
        self.public: IssuedCert | None = None
        self.east_west: IssuedCert | None = None
        self._vault_ok: bool | None = None
        self._failures = 0  # consecutive failed renewals
        self._last_error: str | None = None
        self._last_renewal: float | None = None
        self._next_renewal: float | None = None
        self._next_kv: float | None = None
        self._lock = asyncio.Lock()
        self.rotations = 0
        self._cache_path = cache_path  # last material on disk (federation.tls_cache)
        self.etcd_client = etcd_client
        self.etcd_cert: IssuedCert | None = None
        self.served_from_cache = False

    # -- identity
    @property
    def spiffe_id(self) -> str:
        td = self._settings.pki.trust_domain if self._settings.pki else "fedgate.local"
        return gateway_spiffe_id(td, self.cluster)

    # -- Vault calls (worker thread)
    def _issue_pki(
        self, common_name: str, params: dict[str, Any], role: str | None = None
    ) -> CertificateMaterial:
        pki = self._settings.pki
        assert pki is not None
        resp = self.session.call(
            lambda c: c.secrets.pki.generate_certificate(
                name=role or pki.role,
                common_name=common_name,
                extra_params={"ttl": pki.ttl, "format": "pem", **params},
                mount_point=pki.mount,
            )
        )
        return _pki_material(resp["data"])

    def _read_kv(self) -> CertificateMaterial:
        kv = self._settings.kv
        assert kv is not None
        resp = self.session.call(
            lambda c: c.secrets.kv.v2.read_secret_version(
                path=kv.path, mount_point=kv.mount, raise_on_deleted_version=True
            )
        )
        data = resp["data"]["data"]
        missing = [k for k in ("certificate", "private_key") if not data.get(k)]
        if missing:
            raise VaultError(
                f"vault kv {kv.mount}/{kv.path}: missing field(s) {', '.join(missing)}"
            )
        return CertificateMaterial(
            certificate=str(data["certificate"]).strip() + "\n",
            private_key=str(data["private_key"]).strip() + "\n",
            ca_bundle=str(data.get("ca") or "").strip() + "\n",
        )

    def _fetch(self, *, pki: bool, kv: bool) -> tuple[IssuedCert | None, IssuedCert | None]:
        """(public, east_west) newly fetched; None where not fetched this time."""
        now = self._clock()
        public: IssuedCert | None = None
        east_west: IssuedCert | None = None
        if pki and self._settings.pki is not None:
            dns, ips = _split_names(self.public_names)
            if self._settings.kv is None:
                if not dns and not ips:
                    raise VaultError(
                        "vault.pki.serverNames is empty: no name for the public certificate"
                    )
                cn = dns[0] if dns else ips[0]
                params: dict[str, Any] = {}
                if dns[1:]:
                    params["alt_names"] = ",".join(dns[1:])
                if ips:
                    params["ip_sans"] = ",".join(ips)
                public = describe(self._issue_pki(cn, params), issued_at=now)
            td = self._settings.pki.trust_domain
            ew = self._issue_pki(
                f"{self.cluster}.gateway.{td}",
                {"uri_sans": self.spiffe_id, "exclude_cn_from_sans": True},
            )
            east_west = describe(ew, issued_at=now)
            if self.etcd_client is not None:
                self._issue_etcd_client(self.etcd_client, now)
        if kv and self._settings.kv is not None:
            public = describe(self._read_kv(), issued_at=now)
            if self._settings.pki is None:
                east_west = public
        return public, east_west

    def _issue_etcd_client(self, spec: EtcdClientCert, now: float) -> None:
        """The etcd client certificate (CN = the etcd role), written to its files: the
        etcd client reads rotated files at its next check (``EtcdClient``)."""
        material = self._issue_pki(spec.common_name, {}, role=spec.role)
        tls_cache.write_pem(spec.key, material.private_key)
        tls_cache.write_pem(spec.cert, material.certificate)
        self.etcd_cert = describe(material, issued_at=now)

    # -- life cycle
    async def start(self, *, wait: bool = False) -> TlsContexts:
        """Log in, issue, build the contexts and load the material.

        When Vault does not answer: the last material kept on disk (``cache_path``) if it
        has not expired, renewal retried by :meth:`run`; else raise :class:`VaultError`,
        or with ``wait`` try again with backoff, logging why, until Vault answers."""
        attempt = 0
        while True:
            try:
                public, east_west = await asyncio.to_thread(self._fetch, pki=True, kv=True)
                break
            except Exception as exc:
                self._vault_ok = False
                err = exc if isinstance(exc, VaultError) else None
                message = str(err) if err else f"vault {self._settings.addr}: {_one_line(exc)}"
                self._last_error = message
                cached, why = self._cached()
                if cached is not None:
                    log.warning("vault.serving_cache", error=message, cache=why)
                    self.served_from_cache = True
                    self._failures = 1  # run() asks Vault again at once, then backs off
                    self.contexts = build_contexts(
                        public=cached[0] is not None, east_west=cached[1] is not None
                    )
                    self._install(*cached, save=False)
                    self._schedule()
                    return self.contexts
                if not wait:
                    raise VaultError(message) from None
                delay = backoff_delay(
                    attempt, initial=self._backoff_initial, maximum=self._backoff_max, rng=self._rng
                )
                log.warning("vault.unavailable", error=message, cache=why, retry_in=round(delay, 2))
                attempt += 1
                await self._sleep(delay)
        self.contexts = build_contexts(public=public is not None, east_west=east_west is not None)
        self._install(public, east_west)
        self._vault_ok = True
        self._schedule()
        return self.contexts

    def _cached(self) -> tuple[tuple[IssuedCert | None, IssuedCert | None] | None, str]:
        """The unexpired material on disk, or None and why not."""
        if self._cache_path is None:
            return None, "no TLS cache configured"
        try:
            public, east_west = tls_cache.load_material(self._cache_path)
            now = self._clock()
            pub = describe(public, issued_at=now) if public is not None else None
            ew = describe(east_west, issued_at=now) if east_west is not None else None
        except tls_cache.CacheError as exc:
            return None, str(exc)
        except Exception as exc:
            return None, f"TLS cache {self._cache_path}: {_one_line(exc)}"
        certs = [c for c in (pub, ew) if c is not None]
        if not certs:
            return None, f"TLS cache {self._cache_path}: empty"
        if min(c.not_after for c in certs) <= now:
            return None, f"TLS cache {self._cache_path}: the certificate has expired"
        return (
            pub,
            ew,
        ), f"from {self._cache_path}, valid {min(c.not_after for c in certs) - now:.0f}s more"

    def _install(
        self, public: IssuedCert | None, east_west: IssuedCert | None, *, save: bool = True
    ) -> None:
        assert self.contexts is not None
        try:
            install(
                self.contexts,
                public=public.material if public else None,
                east_west=east_west.material if east_west else None,
            )
        except Exception as exc:
            raise VaultError(
                f"vault: the issued certificate does not load: {_one_line(exc)}"
            ) from None
        if public is not None:
            self.public = public
        if east_west is not None:
            self.east_west = east_west
        self._last_renewal = self._clock()
        self.rotations += 1
        if save and self._cache_path is not None:
            try:
                tls_cache.save_material(
                    self._cache_path,
                    self.public.material if self.public else None,
                    self.east_west.material if self.east_west else None,
                )
                self.served_from_cache = False
            except OSError as exc:
                log.warning("vault.cache_write_failed", path=self._cache_path, error=exc.strerror)

    def _schedule(self) -> None:
        now = self._clock()
        certs = [c for c in (self.public, self.east_west) if c is not None]
        if self._settings.pki is not None and certs:
            first = min(certs, key=lambda c: c.not_after)
            self._next_renewal = now + renewal_delay(
                issued_at=first.issued_at, not_after=first.not_after, now=now, rng=self._rng
            )
        else:
            self._next_renewal = None
        if self._settings.kv is not None:
            # a bring-your-own certificate changes when the operator writes the secret:
            # looked for every kv_refresh seconds (never sooner: no tight loop when an
            # unchanged certificate is past 2/3 of its life)
            self._next_kv = now + self._kv_refresh

    async def rotate(self, *, pki: bool = True, kv: bool = True) -> None:
        """Fetch new material now and load it (new handshakes use it); raises VaultError."""
        async with self._lock:
            try:
                public, east_west = await asyncio.to_thread(self._fetch, pki=pki, kv=kv)
                # the KV certificate unchanged: nothing to load for it
                if (
                    kv
                    and self._settings.kv is not None
                    and public is not None
                    and self.public is not None
                    and public.serial == self.public.serial
                ):
                    public = None
                    if self._settings.pki is None:
                        east_west = None
                if public is not None or east_west is not None:
                    self._install(public, east_west)
            except Exception as exc:
                self._vault_ok = False
                self._failures += 1
                self._last_error = (
                    exc.args[0]
                    if isinstance(exc, VaultError)
                    else f"vault {self._settings.addr}: {_one_line(exc)}"
                )
                self._notify()
                raise VaultError(self._last_error) from None
            self._vault_ok = True
            self._failures = 0
            self._last_error = None
            self._schedule()
            self._notify()

    async def run(self) -> None:
        """Renew at ~2/3 of the lifetime; on failure back off (jittered, exponential).

        Between certificate renewals it also keeps the Vault token alive (renewed at 2/3
        of its TTL, or a new login), so a token-auth gateway whose token outlives no
        certificate renewal does not lose it."""
        if self.contexts is None:
            raise VaultError("vault: run() before start()")
        expiry_told = False
        token_failures = 0
        while True:
            now = self._clock()
            due = [t for t in (self._next_renewal, self._next_kv) if t is not None]
            if self._failures:
                retry = backoff_delay(
                    self._failures - 1,
                    initial=self._backoff_initial,
                    maximum=self._backoff_max,
                    rng=self._rng,
                )
                due = [now + retry]
            token_at = self.session.renew_at
            if token_at is not None and not self._failures:
                if token_failures:
                    token_at = now + backoff_delay(
                        token_failures - 1,
                        initial=self._backoff_initial,
                        maximum=self._backoff_max,
                        rng=self._rng,
                    )
                due.append(token_at)
            wake = min(due) if due else now + self._kv_refresh
            not_after = self.not_after
            if not_after is not None and not expiry_told and not_after > now:
                wake = min(wake, not_after + 0.01)  # tell the expiry when it happens
            await self._sleep(max(0.0, wake - now))
            now = self._clock()
            if not_after is not None and now >= not_after and not expiry_told:
                expiry_told = True
                self._notify()
            pki_due = self._failures > 0 or (
                self._next_renewal is not None and now >= self._next_renewal
            )
            kv_due = self._failures > 0 or (self._next_kv is not None and now >= self._next_kv)
            if pki_due or kv_due:
                with contextlib.suppress(VaultError):
                    await self.rotate(pki=pki_due, kv=kv_due)
                if self._failures == 0:
                    expiry_told = False
                    token_failures = 0
                continue
            token_at = self.session.renew_at
            if token_at is not None and (token_failures or now >= token_at):
                try:
                    await asyncio.to_thread(self.session.ensure)
                    token_failures = 0
                    self._vault_ok = True
                except Exception as exc:
                    token_failures += 1
                    self._vault_ok = False
                    self._last_error = (
                        exc.args[0] if isinstance(exc, VaultError) else _one_line(exc)
                    )
                    self._notify()

    # -- status
    @property
    def not_after(self) -> float | None:
        """Expiry of the certificate that expires first (what the gateway depends on)."""
        certs = [c.not_after for c in (self.public, self.east_west) if c is not None]
        return min(certs) if certs else None

    @property
    def expired(self) -> bool:
        """The east-west (or only) certificate has expired: other gateways refuse it, so
        the composition root takes this cluster out of east-west routing."""
        cert = self.east_west or self.public
        return cert is not None and self._clock() >= cert.not_after

    def status(self) -> dict[str, object]:
        cert = self.east_west or self.public
        now = self._clock()
        return {
            "cert_not_after": cert.not_after if cert else None,
            "cert_serial": cert.serial if cert else None,
            "cert_expired": self.expired,
            "cert_expires_in": (cert.not_after - now) if cert else None,
            "public_not_after": self.public.not_after if self.public else None,
            "public_serial": self.public.serial if self.public else None,
            "spiffe_id": self.spiffe_id if self._settings.pki else None,
            "vault_ok": bool(self._vault_ok),
            "renewal_failing": self._failures > 0,
            "consecutive_failures": self._failures,
            "last_error": self._last_error,
            "last_renewal": self._last_renewal,
            "next_renewal": self._next_renewal,
            "rotations": self.rotations,
            "auth_method": self._settings.auth.method,
            "logins": self.session.logins,
        }

    def _notify(self) -> None:
        if self._on_status is not None:
            with contextlib.suppress(Exception):
                self._on_status(self.status())
