"""ACME in a running gateway: the names of the view, their SNI contexts, their renewal.

``fedgate serve`` builds one :class:`AcmeGateway` when ``acme`` is set: it attaches the
SNI selection to the public TLS context (names without a certificate yet keep the Vault
PKI one), and on every new view starts a keeper per ``tls: acme`` host (and stops the
keepers of hosts that left), follows the TLS-ALPN-01 challenges (whoever published
them: ``gateway/acme_alpn.py``) and the zones (DNS-01 possible). :meth:`status` goes
into the gateway's status (``/v1/status``); :meth:`report` keeps the gateway record's
ACME fields current for ``/v1/health/global``: the names still missing a certificate,
the last ACME problem, and the certificate that expires first.
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
from federation.acme_records import txt_name
from federation.acme_renew import AcmeRenewer
from federation.acme_store import AcmeCert, AcmeStore, Caller
from federation.etcd import EtcdClient
from federation.model import RoutingView, Service, acme_hosts
from federation.settings import AcmeSettings
from gateway.acme_sni import AcmeSni


def acme_config(settings: AcmeSettings) -> AcmeConfig:
    """The client configuration; the EAB HMAC key is read from its file (one-line error)."""
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
            dns_zone=self._in_zone,
            settle=self._settled,
        )
        self._view: RoutingView | None = None
        self._zones: frozenset[str] = frozenset()
        self._zone_source: object = None
        self.renewer = AcmeRenewer(self.orderer, self._install, rng=rng or random.Random())
        self._services: Mapping[str, Service] | None = None
        self._alpn: Mapping[str, str] | None = None

    def _install(self, cert: AcmeCert) -> None:
        self.sni.install(cert.name, cert.fullchain_pem, cert.key_pem)

    def _in_zone(self, name: str) -> bool:
        """DNS-01 is possible: ``name`` lies in a zone of fedgate's DNS (``zones``)."""
        labels = name.lower().rstrip(".").removeprefix("*.").split(".")
        return any(".".join(labels[i:]) in self._zones for i in range(len(labels)))

    async def _settled(self, form: str, ident: str, value: str, timeout: float = 2.0) -> None:
        """Wait (at most ``timeout``) until this gateway's own view holds a challenge it
        published: the watch has delivered it here, and to the other gateways' watches
        within the same few milliseconds, so the CA's first validation finds it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            v = self._view
            if v is not None and (
                (form == "tls-alpn-01" and v.acme_alpn.get(ident) == value)
                or (form == "dns-01" and value in v.acme_txt.get(txt_name(ident), ()))
                or (form == "http-01" and v.acme_challenges.get(ident) == value)
            ):
                return
            await asyncio.sleep(0.01)  # poll the view; bounded by the deadline

    def on_view(self, view: RoutingView) -> None:
        """Follow the TLS-ALPN-01 challenges, the zones and the ``tls: acme`` hosts (each
        only when it changed)."""
        self._view = view
        if view.acme_alpn is not self._alpn:
            self._alpn = view.acme_alpn
            self.sni.challenges(view.acme_alpn)
        if view.zones is not self._zone_source:
            self._zone_source = view.zones
            self._zones = frozenset(z.name for z in view.zones)
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
            update(
                acme_missing=tuple(self.sni.missing()[:32]),
                acme_problem=self.problem(),
                **self.soonest(),
            )
            if self._metrics is not None:
                self._metrics.sample(self)
            await asyncio.sleep(every)

    def soonest(self) -> dict[str, Any]:
        """The certificate that expires first, for the gateway record (global health's
        certificate warnings: ``acme_name``, ``acme_not_after``, ``acme_renew_at``)."""
        held = [(st.cert.not_after, n, st.cert) for n, st in self.renewer.states.items() if st.cert]
        if not held:
            return {"acme_name": "", "acme_not_after": None, "acme_renew_at": None}
        _, name, cert = min(held, key=lambda t: (t[0], t[1]))
        return {
            "acme_name": name,
            "acme_not_after": cert.not_after,
            "acme_renew_at": cert.renew_at(),
        }

    def status(self) -> dict[str, Any]:
        return {
            "names": self.renewer.status(),
            "missing": self.sni.missing(),  # served the Vault PKI certificate meanwhile
            "orders": self.orderer.orders,
            "accounts": self.orderer.accounts,
            "challenges": dict(self.orderer.challenges),
            "challengeHandshakes": self.sni.challenge_handshakes,
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
        self.accounts = Counter(
            "fedgate_acme_accounts",
            "ACME accounts this gateway registered (1 across the federation, ever).",
            registry=registry,
        )
        self.challenges = Counter(
            "fedgate_acme_challenges",
            "ACME challenges this gateway published and answered, by type.",
            ["type"],
            registry=registry,
        )
        self._orders_seen = 0
        self._accounts_seen = 0
        self._challenges_seen: dict[str, int] = {}
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
        made = acme.orderer.accounts
        if made > self._accounts_seen:
            self.accounts.inc(made - self._accounts_seen)
            self._accounts_seen = made
        for form, n in acme.orderer.challenges.items():
            seen = self._challenges_seen.get(form, 0)
            if n > seen:
                self.challenges.labels(form).inc(n - seen)
                self._challenges_seen[form] = n
