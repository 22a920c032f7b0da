"""ACME in a running gateway: the names of the view, their SNI contexts, their renewal.

``fedgate serve`` builds one :class:`AcmeGateway` when ``acme`` is set: it attaches the
SNI selection to the public TLS context (names without a certificate yet keep the Vault
PKI one), and on every new view starts a keeper per ``tls: acme`` host (and stops the
keepers of hosts that left). :meth:`status` goes into the gateway's status
(``/v1/status``, aggregated in ``/v1/health/global``): per name, expiry and the last
ACME problem, and the names still missing a certificate.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from federation.acme_client import AcmeConfig, AcmeOrderer
from federation.acme_lock import AcmeLock
from federation.acme_renew import AcmeRenewer
from federation.acme_store import AcmeCert, AcmeStore, Caller
from federation.etcd import EtcdClient
from federation.model import RoutingView, Service, acme_hosts
from federation.settings import AcmeSettings
from gateway.acme_sni import AcmeSni


def acme_config(settings: AcmeSettings) -> AcmeConfig:
    """The client configuration; the EAB HMAC key is read from its file (one-line error)."""
    if settings.challenge != "http-01":  # the seam: docs/tls.md, "ACME"
        raise ValueError(f"acme.challenge {settings.challenge} is not answered yet: use http-01")
    hmac_key = None
    if settings.eab is not None:
        try:
            hmac_key = Path(settings.eab.hmac_key_file).read_text().strip()
        except OSError as exc:
            raise ValueError(
                f"acme.eab.hmacKeyFile {settings.eab.hmac_key_file}: {exc.strerror}"
            ) from None
    return AcmeConfig(
        directory=settings.directory,
        email=settings.email,
        eab_kid=settings.eab.kid if settings.eab is not None else None,
        eab_hmac_key=hmac_key,
        challenge=settings.challenge,
    )


class AcmeGateway:
    def __init__(
        self,
        settings: AcmeSettings,
        *,
        vault_call: Caller,
        kv_mount: str,
        etcd: EtcdClient,
        prefix: str,
        holder: str,
        public: ssl.SSLContext | None,
        rng: random.Random | None = None,
        registry: Any = None,  # the gateway's prometheus CollectorRegistry
    ) -> None:
        self.sni = AcmeSni()
        self._metrics = _Metrics(registry) if registry is not None else None
        if public is not None:
            self.sni.attach(public)
        self.orderer = AcmeOrderer(
            acme_config(settings),
            AcmeStore(call=vault_call, mount=kv_mount),
            AcmeLock(etcd, prefix, holder, ttl=settings.lock_ttl),
        )
        self.renewer = AcmeRenewer(self.orderer, self._install, rng=rng or random.Random())
        self._services: Mapping[str, Service] | None = None

    def _install(self, cert: AcmeCert) -> None:
        self.sni.install(cert.name, cert.fullchain_pem, cert.key_pem)

    def on_view(self, view: RoutingView) -> None:
        """Follow the ``tls: acme`` hosts (only when the services changed)."""
        if view.services is self._services:
            return
        self._services = view.services
        names = set(acme_hosts(view.services.values()))
        self.sni.want(names)
        self.renewer.ensure(names)

    async def close(self) -> None:
        await self.renewer.close()

    def problem(self) -> str | None:
        """The first name's problem (the CA's problem document, one line), or None."""
        for name, st in sorted(self.renewer.states.items()):
            if st.problem:
                return f"{name}: {st.problem}"[:300]
        return self.orderer.last_problem

    async def report(self, update: Callable[..., None], *, every: float = 1.0) -> None:
        """Keep the gateway record's ``acme_missing`` / ``acme_problem`` current (for
        ``/v1/health/global``); the record rewrites itself only on a change."""
        while True:
            update(acme_missing=tuple(self.sni.missing()[:32]), acme_problem=self.problem())
            if self._metrics is not None:
                self._metrics.sample(self)
            await asyncio.sleep(every)

    def status(self) -> dict[str, Any]:
        return {
            "names": self.renewer.status(),
            "missing": self.sni.missing(),  # served the Vault PKI certificate meanwhile
            "orders": self.orderer.orders,
            "lastProblem": self.orderer.last_problem,
        }


class _Metrics:
    """``fedgate_acme_*`` (docs/observability.md), sampled with the status report."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge

        self.expiry = Gauge(
            "fedgate_acme_certificate_expiry_timestamp_seconds",
            "Expiry of the ACME certificate of a tls: acme host, unix seconds (NaN: none yet).",
            ["name"],
            registry=registry,
        )
        self.failures = Gauge(
            "fedgate_acme_consecutive_failures",
            "Consecutive failed attempts to obtain a name's ACME certificate.",
            ["name"],
            registry=registry,
        )
        self.orders = Counter(
            "fedgate_acme_orders", "ACME orders this gateway placed since it started.",
            registry=registry,
        )  # fmt: skip
        self._orders_seen = 0
        self._names: set[str] = set()

    def sample(self, acme: AcmeGateway) -> None:
        states = dict(acme.renewer.states)
        for gone in self._names - states.keys():
            self.expiry.remove(gone)
            self.failures.remove(gone)
        self._names = set(states)
        for name, st in states.items():
            self.expiry.labels(name).set(st.cert.not_after if st.cert else float("nan"))
            self.failures.labels(name).set(st.failures)
        placed = acme.orderer.orders
        if placed > self._orders_seen:  # a counter: only the new orders are added
            self.orders.inc(placed - self._orders_seen)
            self._orders_seen = placed
