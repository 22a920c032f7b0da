"""Validated wire models -> the frozen domain model of ``federation.model``."""

from __future__ import annotations

import ipaddress
import math
from types import MappingProxyType

from federation.manifest import schema, values
from federation.model import (
    GRPC_STATUS_CODES,
    Access,
    CircuitBreaker,
    Cluster,
    Failover,
    Federation,
    HeaderRules,
    HealthCheck,
    KubernetesDiscovery,
    NearestRule,
    PublicEntry,
    RateLimit,
    Redirect,
    Retries,
    Route,
    RouteConditions,
    Service,
    ServiceDns,
    Sticky,
    Timeouts,
    ValueMatch,
    WeightedBackend,
    Zone,
)


def cluster(doc: schema.ClusterDoc) -> Cluster:
    return Cluster(
        name=doc.name,
        region=doc.region,
        cloud=doc.cloud,
        environment=doc.environment,
        tier=doc.tier,
        east_west=doc.gateway.east_west,
        kubernetes=(
            KubernetesDiscovery(
                namespaces=tuple(doc.kubernetes.namespaces), context=doc.kubernetes.context
            )
            if doc.kubernetes is not None
            else None
        ),
        labels=MappingProxyType(dict(doc.labels)),
        public_entry=(
            PublicEntry(
                addresses=tuple(doc.public_entry.addresses or ()),
                hostname=doc.public_entry.hostname or "",
            )
            if doc.public_entry is not None
            else None
        ),
    )


def service_dns(doc: schema.ServiceDnsDoc) -> ServiceDns:
    return ServiceDns(
        strategy=doc.strategy,
        ttl=doc.ttl,
        order=tuple(doc.order or ()),
        nearest=tuple(
            NearestRule(network=values.parse_network(n.cidr), clusters=tuple(n.clusters))
            for n in doc.nearest or ()
        ),
    )


def zone(doc: schema.ZoneDoc) -> Zone:
    return Zone(
        name=doc.name,
        hostmaster=doc.hostmaster or "",
        ttl=doc.ttl,
        negative_ttl=doc.negative_ttl,
    )


def access(doc: schema.AccessDoc) -> Access:
    spiffe: set[str] = set()
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for entry in doc.allow:
        if entry.lower().startswith("spiffe:"):
            spiffe.add(entry)
        else:
            network = values.parse_network(entry)
            if network not in networks:
                networks.append(network)
    return Access(spiffe_ids=frozenset(spiffe), networks=tuple(networks))


def _value_match(doc: schema.ValueMatchDoc) -> ValueMatch:
    if doc.exact is not None:
        return ValueMatch(name=doc.name, kind="exact", value=doc.exact)
    if doc.prefix is not None:
        return ValueMatch(name=doc.name, kind="prefix", value=doc.prefix)
    return ValueMatch(name=doc.name, kind="absent" if doc.present is False else "present")


def _header_rules(doc: schema.HeaderRulesDoc | None) -> HeaderRules | None:
    if doc is None or not (doc.add or doc.set_ or doc.remove):
        return None
    return HeaderRules(
        add=tuple(doc.add.items()), set=tuple(doc.set_.items()), remove=tuple(doc.remove)
    )


def route(doc: schema.RouteDoc) -> Route:
    m, rw, rd = doc.match, doc.rewrite, doc.redirect
    conditions = None
    if m is not None and (m.methods or m.headers or m.query):
        conditions = RouteConditions(
            methods=frozenset(m.methods),
            headers=tuple(_value_match(h) for h in m.headers),
            query=tuple(_value_match(q) for q in m.query),
        )
    sticky = None
    if doc.sticky is not None:
        sticky = Sticky(header=doc.sticky.header or "", cookie=doc.sticky.cookie or "")
    return Route(
        host=doc.host,
        path_prefix=doc.path_prefix,
        match=conditions,
        backends=tuple(WeightedBackend(service=b.service, weight=b.weight) for b in doc.backends),
        sticky=sticky,
        request_headers=_header_rules(doc.request_headers),
        response_headers=_header_rules(doc.response_headers),
        rewrite_path_prefix=rw.path_prefix if rw is not None else None,
        rewrite_host=rw.host if rw is not None else None,
        redirect=(
            Redirect(
                scheme=rd.scheme,
                host=rd.host,
                port=rd.port,
                path=rd.path,
                path_prefix=rd.path_prefix,
                status=rd.status,
            )
            if rd is not None
            else None
        ),
        timeout=doc.timeout,
        tls=doc.tls,
    )


def service(doc: schema.ServiceDoc) -> Service:
    hc, fo, rt, cb, to = (
        doc.health_check,
        doc.failover,
        doc.retries,
        doc.circuit_breaker,
        doc.timeouts,
    )
    rate_limit = None
    if doc.rate_limit is not None:
        rl = doc.rate_limit
        rate_limit = RateLimit(
            average=rl.average,
            burst=rl.burst if rl.burst is not None else max(1, math.ceil(rl.average)),
            per=rl.per,
            scope=rl.scope,
        )
    return Service(
        name=doc.name,
        routes=tuple(route(r) for r in doc.routes),
        port=doc.port,
        clusters=tuple(doc.clusters),
        endpoints=MappingProxyType({c: tuple(a) for c, a in doc.endpoints.items()}),
        health_check=HealthCheck(
            path=hc.path,
            interval=hc.interval,
            timeout=hc.timeout,
            healthy_after=hc.healthy_after,
            unhealthy_after=hc.unhealthy_after,
        ),
        failover=Failover(
            policy=fo.policy, order=tuple(fo.order or ()), failback_window=fo.failback_window
        ),
        retries=Retries(
            attempts=rt.attempts,
            per_try_timeout=rt.per_try_timeout,
            budget_percent=rt.budget_percent,
            on=frozenset(rt.on),
            grpc_status=frozenset(GRPC_STATUS_CODES[n] for n in rt.grpc_status),
        ),
        circuit_breaker=CircuitBreaker(
            max_pending=cb.max_pending,
            consecutive_failures=cb.consecutive_failures,
            open_for=cb.open_for,
        ),
        rate_limit=rate_limit,
        access=access(doc.access) if doc.access is not None else None,
        timeouts=Timeouts(connect=to.connect, request=to.request, idle=to.idle),
        max_body_bytes=doc.max_body_bytes,
        protocol=doc.protocol,
        dns=service_dns(doc.dns),
        tls=doc.tls,
    )


def federation(doc: schema.ManifestDoc) -> Federation:
    return Federation(
        name=doc.metadata.name,
        clusters=tuple(cluster(c) for c in doc.clusters),
        services=tuple(service(s) for s in doc.services),
        zones=tuple(zone(z) for z in doc.zones),
    )
