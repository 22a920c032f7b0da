"""``fedgate serve --config gateway.yaml``: run one gateway (the composition root).

Wires the parts together: the routing view (etcd watcher, or a manifest file in
development), TLS from Vault, the data plane, liveness, health observations,
Kubernetes discovery and the admin API. Start-up misconfiguration is fatal with one
line; once serving, every failure of etcd, Vault or Kubernetes is survived.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from federation.cli import CommandError
from federation.commands.serve_explain import explain_request
from federation.settings import GatewaySettings, SettingsError, load_settings

EXIT_CONFIG = 2
T = TypeVar("T")


_ETCD_FLAGS = (
    ("etcd_cacert", "etcd.tls.ca"),
    ("etcd_cert", "etcd.tls.cert"),
    ("etcd_key", "etcd.tls.key"),
    ("etcd_user", "etcd.username"),
    ("etcd_password_file", "etcd.passwordFile"),
)


def _settings(args: argparse.Namespace) -> GatewaySettings:
    overrides: dict[str, Any] = {}
    if getattr(args, "cluster", None):
        overrides["cluster"] = args.cluster
    if getattr(args, "etcd", None):
        overrides["etcd.endpoints"] = args.etcd.split(",")
    if getattr(args, "prefix", None):
        overrides["etcd.prefix"] = args.prefix
    if getattr(args, "vault_addr", None):
        overrides["vault.addr"] = args.vault_addr
    for flag, dotted in _ETCD_FLAGS:
        if getattr(args, flag, None):
            overrides[dotted] = getattr(args, flag)
    try:
        return load_settings(args.config, overrides=overrides)
    except SettingsError as exc:
        # one line per problem, as `fedgate validate` prints the manifest's (the last
        # one goes through CommandError: "fedgate serve: ...")
        for line in exc.lines[:-1]:
            print(f"fedgate serve: {line}", file=sys.stderr)
        raise CommandError(exc.lines[-1], EXIT_CONFIG) from None


def run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _check(settings)  # serve refuses at start what --check refuses
    if args.check:
        print(f"{args.config}: ok: gateway for cluster {settings.cluster}")
        return 0
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        pass
    from federation.logging import configure_logging

    configure_logging(settings.telemetry.log_format, settings.telemetry.log_level)
    from federation.heap import prefer_the_loop

    prefer_the_loop()
    try:
        return asyncio.run(GatewayProcess(settings).run())
    except StartupError as exc:
        raise CommandError(str(exc), EXIT_CONFIG) from None


def _check(settings: GatewaySettings) -> None:
    """What can be checked without starting anything: everything ``serve`` would refuse
    at start before it opens a connection (so ``--check`` passing means ``serve`` gets
    as far as reaching etcd and Vault)."""
    # (the etcd endpoints are checked by the settings themselves, as the client reads them)
    if settings.vault is None and settings.listen.east_west and not settings.insecure_east_west:
        raise CommandError(
            "listen.eastWest needs mutual TLS: configure vault, or set insecureEastWest: true "
            "(development only)",
            EXIT_CONFIG,
        )
    if settings.manifest:
        from federation.manifest import ManifestError, load_manifest

        try:
            fed = load_manifest(settings.manifest)
        except ManifestError as exc:
            raise CommandError(f"manifest: {exc}", EXIT_CONFIG) from None
        if settings.cluster not in {c.name for c in fed.clusters}:
            raise CommandError(f"cluster {settings.cluster!r} is not in the manifest", EXIT_CONFIG)
    try:
        settings.admin_token()
        settings.etcd.client_options()
    except SettingsError as exc:
        raise CommandError(str(exc), EXIT_CONFIG) from None


class StartupError(Exception):
    """Fatal at start: one line."""


class GatewayProcess:
    """One gateway process: everything it runs, started and stopped in order."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.discovery: Any = None
        self.metrics_registry: Any = None  # where discovery's collector goes (metrics on)

    def _spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        async def guarded() -> None:
            from federation.logging import get_logger

            log = get_logger(__name__)
            delay = 0.5
            while not self._stop.is_set():
                try:
                    await factory()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a background part failed: log, back off, run again
                    log.error("serve.task_failed", task=name, error=repr(exc))
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), timeout=delay)
                    delay = min(delay * 2, 10.0)

        self.tasks.append(asyncio.create_task(guarded(), name=name))

    async def run(self) -> int:
        from federation.api import create_admin_app
        from federation.keys import KeyLayout
        from federation.logging import get_logger
        from federation.model import GatewayRecord, RoutingView
        from federation.ratelimit_share import live_gateway_count
        from gateway.balancer import Balancer
        from gateway.config import DataPlaneSettings
        from gateway.passive import PassiveStats
        from gateway.placement import Placement
        from gateway.ratelimit import RateLimiter
        from gateway.resilience import CircuitBreakers, RetryBudget
        from gateway.server import Gateway
        from gateway.telemetry import Telemetry
        from gateway.types import ViewHolder

        # a SIGTERM during start-up must drain too, not kill the process outright
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        s = self.settings
        log = get_logger(__name__)
        gateway_id = s.gateway_id
        layout = KeyLayout(s.etcd.prefix)
        holder = ViewHolder()
        telemetry = Telemetry(
            gateway_id=gateway_id,
            cluster=s.cluster,
            metrics=s.telemetry.metrics,
            access_log=s.telemetry.access_log,
            tracing=s.telemetry.tracing.enabled,
            otlp_endpoint=s.telemetry.tracing.otlp_endpoint,
            sample_ratio=s.telemetry.tracing.sample_ratio,
            per_pair_limit=s.telemetry.metrics_per_pair,
        )
        self.metrics_registry = telemetry.registry if s.telemetry.metrics else None
        placement = Placement(s.cluster)
        passive = PassiveStats()
        limiter = RateLimiter()
        balancer = Balancer()
        breakers = CircuitBreakers(on_change=telemetry.set_breaker_state)
        budget = RetryBudget()
        try:
            token = s.admin_token()
            etcd_options = s.etcd.client_options()
        except SettingsError as exc:
            raise StartupError(str(exc)) from None

        # -- TLS from Vault (at start: from Vault, else the cached material, else wait for it)
        tls = None
        vault = None
        if s.vault is not None:
            from federation.vault import VaultError, VaultTls, etcd_client_cert

            cache = s.vault.material_cache or (f"{s.snapshot}.tls" if s.snapshot else None)
            try:  # during a Vault outage: the cached material, or wait (logged), never exit
                vault = VaultTls(
                    s.vault, cluster=s.cluster, gateway_id=gateway_id, cache_path=cache,
                    etcd_client=etcd_client_cert(s),
                )  # fmt: skip
                started = await self._unless_stopped(vault.start(wait=True))
            except VaultError as exc:
                raise StartupError(str(exc)) from None
            if started is None:  # SIGTERM while waiting for Vault: nothing to drain
                log.info("serve.stopped", gateway=gateway_id, waited_for="vault")
                return 0
            tls = started
        elif s.listen.east_west and not s.insecure_east_west:
            raise StartupError(
                "listen.eastWest needs mutual TLS: configure vault, or set insecureEastWest: true"
            )

        # -- the view source
        registration = None
        watcher = None
        client = None
        if s.manifest:
            from federation.manifest import ManifestError, load_manifest
            from federation.manifest_view import view_from_federation

            try:
                fed = load_manifest(s.manifest)
            except ManifestError as exc:
                raise StartupError(f"manifest: {exc}") from None
            holder.swap(view_from_federation(fed, now=time.time()))
        else:
            from federation.etcd import EtcdClient
            from federation.liveness import GatewayLease, GatewayRegistration
            from federation.watch import ViewWatcher

            try:  # etcd's TLS files, readable now (Vault has written what it issues)
                if "tls" in etcd_options:
                    etcd_options["tls"].credentials()
            except ValueError as exc:
                raise StartupError(f"etcd.tls: {exc}") from None
            try:
                client = EtcdClient(s.etcd.endpoints, timeout=s.etcd.dial_timeout, **etcd_options)
            except ValueError as exc:
                raise StartupError(f"etcd.endpoints: {exc}") from None
            watcher = ViewWatcher(
                client,
                layout,
                on_view=holder.swap,
                snapshot_path=s.snapshot,
                own_keys={layout.gateway(s.cluster, gateway_id)},  # no self-echo
            )
            lease = GatewayLease(client, ttl=s.etcd.lease_ttl)

        def on_view(view: RoutingView) -> None:
            before = holder.view  # listeners run before the swap's assignment
            limiter.set_live_gateways(live_gateway_count(view))
            # forget the state of what left the view (bounded memory over many changes);
            # the incremental view keeps the objects of what did not change
            if view.endpoints is not before.endpoints or view is before:
                balancer.retain(lambda svc, cl: (svc, cl) in view.endpoints)
            if view.services is not before.services or view is before:
                breakers.retain(lambda svc, cl: svc in view.services)
                budget.retain(lambda svc: svc in view.services)
                limiter.retain(
                    lambda svc: (
                        (v := view.services.get(svc)) is not None and v.rate_limit is not None
                    )
                )
            # O(1): the upstream families are computed at scrape time, once per view,
            # under the cardinality budget (gateway/upstream_metrics.py)
            telemetry.set_view(view)
            if registration is not None:
                registration.update(applied_revision=view.config_revision, stale=view.stale)

        holder.subscribe(on_view)

        gateway: Gateway | None = None

        def ready() -> bool:
            return (
                holder.view.source != "empty"
                and gateway is not None
                and bool(gateway.bound)
                and not gateway.draining
            )

        def explain(
            host: str,
            path: str,
            method: str,
            from_cluster: str | None,
            headers: list[tuple[str, str]] | None = None,
        ) -> dict[str, Any]:
            origin = from_cluster or s.cluster
            planner = placement if origin == s.cluster else Placement(origin)
            view, table = gateway.plane.current if gateway is not None else (holder.view, None)
            return explain_request(
                view, planner, host=host, path=path, method=method, origin=origin,
                headers=headers or (), table=table,
            )  # fmt: skip

        acme: Any = None  # federation.acme_gateway.AcmeGateway when acme is set

        def status() -> dict[str, Any]:
            out: dict[str, Any] = {"gateway": gateway_id, "cluster": s.cluster}
            if acme is not None:
                out["acme"] = acme.status()
            if watcher is not None:
                out["watch"] = watcher.stats.as_dict()
            if vault is not None:
                out["vault"] = vault.status()
            if self.discovery is not None:
                out["discovery"] = self.discovery.status()
            return out

        dns_server, dns_report = _dns_parts(s, holder, telemetry)
        admin_app = create_admin_app(
            holder=holder,
            token=token,
            gateway_id=gateway_id,
            cluster=s.cluster,
            telemetry=telemetry,
            explain=explain,
            ready=ready,
            status=status,
            public_metrics=s.admin.public_metrics,
            dns=dns_report,
        )
        gateway = Gateway(
            settings=DataPlaneSettings.from_settings(s),
            holder=holder,
            placement=placement,
            balancer=balancer,
            breakers=breakers,
            budget=budget,
            limiter=limiter,
            telemetry=telemetry,
            passive=passive,
            tls=tls,
            admin_app=admin_app,
        )
        try:
            await gateway.start()
            dns_address = await _start_dns(s, dns_server)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise StartupError(f"cannot bind a listener{where}: {exc.strerror or exc}") from None

        # -- background parts: watch, liveness, health, discovery, certificate renewal
        if watcher is not None and client is not None:
            self._spawn("watch", watcher.run)
            bound = gateway.bound
            record = GatewayRecord(
                id=gateway_id,
                cluster=s.cluster,
                public=_addr(bound.get("public")),
                east_west=_east_west_url(s, bound.get("east_west")),
                admin=_addr(bound.get("admin")),
                started_at=time.time(),
                dns=dns_address,
            )
            registration = GatewayRegistration(lease, layout, record)
            on_view(holder.view)
            await lease.start()  # returns at once when etcd is down; grants in the background
            await registration.start()

            from federation.health import HealthReporter

            reporter = HealthReporter(
                lease=lease,
                layout=layout,
                gateway_id=gateway_id,
                cluster=s.cluster,
                holder=holder,
                passive=passive,
                east_west_context=tls.east_west_client if tls is not None else None,
                placement=placement,
            )
            self._spawn("health", reporter.run)
            from federation.health_leader import HealthLeader

            leader = HealthLeader(
                client=client, layout=layout, reporter=reporter, lease=lease, ttl=lease.ttl
            )
            self._spawn("health-leader", leader.run)
            self._start_discovery(client, layout, lease, holder, gateway_id)
        if vault is not None:
            self._spawn("vault", vault.run)
            self._spawn(
                "vault-status", lambda: self._report_certificates(vault, registration, telemetry)
            )

        if s.acme is not None and vault is not None and client is not None and s.vault is not None:
            from federation.acme_gateway import AcmeGateway

            try:
                acme = AcmeGateway(
                    s.acme, vault_call=vault.session.call,
                    kv_mount=s.vault.kv.mount if s.vault.kv is not None else "secret",
                    etcd=client, prefix=layout.prefix, holder=gateway_id,
                    public=tls.public_server if tls is not None else None,
                    registry=telemetry.registry if s.telemetry.metrics else None,
                )  # fmt: skip
            except ValueError as exc:
                raise StartupError(str(exc)) from None
            holder.subscribe(acme.on_view)
            if registration is not None:
                self._spawn("acme-status", lambda: acme.report(registration.update))

        log.info("serve.started", gateway=gateway_id, cluster=s.cluster, listeners=gateway.bound)
        await self._stop.wait()

        log.info("serve.draining", timeout=s.limits.drain_timeout)
        if acme is not None:
            await acme.close()
        await gateway.drain(s.limits.drain_timeout)
        if dns_server is not None:
            await dns_server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if watcher is not None:
            if registration is not None:
                with contextlib.suppress(Exception):
                    await registration.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(lease.stop(revoke=True), timeout=2.0)
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
        telemetry.close()  # flush the last access-log lines and spans
        log.info("serve.stopped", gateway=gateway_id)
        return 0

    async def _unless_stopped(self, work: Coroutine[Any, Any, T]) -> T | None:
        """``work``'s result, or ``None`` when SIGTERM/SIGINT comes first (``work`` is
        cancelled): a wait at start-up stays interruptible."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            stop.cancel()
            raise
        stop.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return None
        return task.result()

    def _start_discovery(
        self, client: Any, layout: Any, lease: Any, holder: Any, gateway_id: str
    ) -> None:
        """Kubernetes discovery when this cluster's manifest entry asks for it."""
        cluster = holder.view.clusters.get(self.settings.cluster)
        if cluster is None or cluster.kubernetes is None:
            # the view may not hold the cluster yet: decide once it does
            started = False

            def later(view: Any) -> None:
                nonlocal started
                c = view.clusters.get(self.settings.cluster)
                if not started and c is not None and c.kubernetes is not None:
                    started = True
                    self._launch_discovery(client, layout, lease, holder, gateway_id, c)

            holder.subscribe(later)
            return
        self._launch_discovery(client, layout, lease, holder, gateway_id, cluster)

    def _launch_discovery(
        self, client: Any, layout: Any, lease: Any, holder: Any, gateway_id: str, cluster: Any
    ) -> None:
        from federation.discovery import EndpointDiscovery, kubernetes_api_client

        def services() -> list[Any]:
            return [svc for svc in holder.view.services.values() if cluster.name in svc.clusters]

        async def run() -> None:
            # the Kubernetes client is made in the background task: no kubeconfig, or an
            # unreadable one, is logged and retried with the others' backoff; it used to
            # be raised in a view listener and end the whole gateway
            if self.discovery is None:
                self.discovery = EndpointDiscovery(
                    client=client,
                    layout=layout,
                    lease=lease,
                    cluster=cluster,
                    services=services,
                    api_client=kubernetes_api_client(context=cluster.kubernetes.context),
                    source=gateway_id,
                    registry=self.metrics_registry,
                )
            await self.discovery.run()

        self._spawn("discovery", run)

    async def _report_certificates(self, vault: Any, registration: Any, telemetry: Any) -> None:
        while not self._stop.is_set():
            st = vault.status()
            telemetry.set_certificate("public", st.get("public_not_after"))
            for label, attr in (("east_west", "east_west"), ("etcd_client", "etcd_cert")):
                cert = getattr(vault, attr, None)
                telemetry.set_certificate(label, cert.not_after if cert is not None else None)
            if registration is not None:
                registration.update(
                    cert_not_after=st.get("cert_not_after"),
                    cert_serial=st.get("cert_serial"),
                    cert_renew_at=st.get("next_renewal"),
                    vault_ok=st.get("vault_ok"),
                    renewal_failing=bool(st.get("renewal_failing")),
                )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=2.0)


def _dns_parts(s: GatewaySettings, holder: Any, telemetry: Any) -> tuple[Any, Any]:
    """The DNS listener and its admin side when ``listen.dns`` is set, else (None, None)."""
    if not s.listen.dns:
        return None, None
    from gateway.dns import DnsAnswers, DnsServer, Responder
    from gateway.dns.metrics import DnsCollector
    from gateway.dns.report import DnsReport

    answers = DnsAnswers()
    server = DnsServer(
        holder,
        Responder(answers),
        responses_per_second=s.dns.responses_per_second,
        burst=s.dns.burst,
        slip=s.dns.slip,
    )
    if s.telemetry.metrics:
        telemetry.registry.register(DnsCollector(server.stats))
    return server, DnsReport(answers, holder, server)


async def _start_dns(s: GatewaySettings, server: Any) -> str:
    """Bind the DNS listener; the address to advertise in the gateway record ("" if none)."""
    if server is None or not s.listen.dns:
        return ""
    host, port = await server.start(s.listen.dns)
    advertise = s.dns.advertise or ("" if host in ("0.0.0.0", "::", "") else _addr((host, port)))
    server.responder.answers.set_own(s.cluster, advertise)
    return advertise


def _addr(bound: tuple[str, int] | None) -> str:
    return f"{bound[0]}:{bound[1]}" if bound else ""


def _east_west_url(s: GatewaySettings, bound: tuple[str, int] | None) -> str:
    if not bound:
        return ""
    scheme = "http" if s.insecure_east_west else "https"
    return f"{scheme}://{bound[0]}:{bound[1]}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(1)
