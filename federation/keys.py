"""The etcd key layout: the one place that knows where every fact lives.

All keys sit under a prefix (``/fedgate/`` by default). Values are UTF-8 JSON
(see ``federation.codec``).

==========================================  ==========================  =============
key                                         value                       written by
==========================================  ==========================  =============
``{p}federation``                           {"name": ...}               fedgate apply
``{p}clusters/{cluster}``                   Cluster                     fedgate apply
``{p}services/{service}``                   Service                     fedgate apply
``{p}gateways/{cluster}/{gateway}``         GatewayRecord               gateway, lease
``{p}endpoints/{cluster}/{service}/{src}``  [Endpoint, ...]             discovery, lease
``{p}health/{cluster}/summary/{service}``   [Observation]: the cluster  its health leader,
                                            (``*``: cluster-wide)       lock lease
``{p}health/{cluster}/report/{gateway}``    [Observation, ...]          gateway, lease
``{p}health/{cluster}/lock/leader``         leader's gateway id         health leader
``{p}ratelimit/{service}``                  (reserved)                  -
``{p}generation``                           {"generation", "applied"}   fedgate apply
``{p}applying``                             the apply barrier           fedgate apply
``{p}acme/lock/{name}``                     holder id                   ACME orderer, lease
``{p}acme/challenge/{token}``               HTTP-01 key authorization   ACME orderer, lease
``{p}acme/alpn/{name}``                     TLS-ALPN-01 key authz.      ACME orderer, lease
``{p}acme/dns/{name}``                      DNS-01 TXT value            ACME orderer, lease
==========================================  ==========================  =============

``fedgate apply`` owns ``federation``, ``clusters/`` and ``services/`` (the *config*
keys); everything else is written under a lease by the process that knows the fact,
so it vanishes with that process.

Keys that one cluster's processes write start with the cluster's name right after the
kind (``gateways/{cluster}/``, ``endpoints/{cluster}/``, ``health/{cluster}/``): etcd
grants permissions on key *ranges*, so "this cluster's endpoints" must be one prefix.
:data:`WRITERS` says who writes each kind and whether the grant is per cluster;
``fedgate etcd-bootstrap`` turns it into etcd roles (``docs/security.md``). A new kind
is one line there.

Endpoint keys are written cluster first but parsed back to ``(service, cluster,
source)``, the order every consumer uses.

Health keys are ``(cluster, part, name)``: only the ``summary`` part feeds the routing
view; a cluster's ``report`` keys (each gateway's local view) and its ``lock`` are read
by that cluster's health leader alone (``federation/health_leader.py``), so the view
skips them without decoding (:func:`view_skips`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from federation.frozen import builder

DEFAULT_PREFIX = "/fedgate/"


class Kind(StrEnum):
    FEDERATION = "federation"
    CLUSTER = "clusters"
    SERVICE = "services"
    GATEWAY = "gateways"
    ENDPOINTS = "endpoints"
    HEALTH = "health"
    GENERATION = "generation"
    APPLYING = "applying"
    # acme/lock/{name}, acme/challenge/{token}, acme/alpn/{name}, acme/dns/{name}: the
    # orderer, under its lease
    ACME = "acme"


CONFIG_KINDS = frozenset({Kind.FEDERATION, Kind.CLUSTER, Kind.SERVICE, Kind.GENERATION})
# config kinds a watcher holds back while an apply barrier (``applying``) stands: the
# manifest's keys and the generation written by the apply's last transaction
HELD_KINDS = CONFIG_KINDS


class Writer(StrEnum):
    """Who holds write access to a kind of key (one etcd role each; see docs/security.md)."""

    OPERATOR = "operator"  # fedgate apply
    GATEWAY = "gateway"  # one cluster's gateways
    DISCOVERY = "discovery"  # one cluster's endpoint discovery


def role_name(writer: Writer, cluster: str | None = None) -> str:
    """The etcd role (and user, and client certificate CN) of a writer: fedgate-gateway-a."""
    return f"fedgate-{writer.value}" + (f"-{cluster}" if cluster else "")


@dataclass(frozen=True, slots=True)
class Grant:
    """Write access to one folder (or one key) under the prefix."""

    folder: str  # "clusters", "gateways", ... (a Kind's value or a folder another part adds)
    writers: frozenset[Writer]
    per_cluster: bool = False  # the grant is ``{p}{folder}/{cluster}/``
    single_key: bool = False  # ``{p}{folder}`` itself, not a folder

    def key_range(self, prefix: str, cluster: str | None) -> tuple[str, bool]:
        """(key, is_prefix) for this grant under ``prefix``, for ``cluster`` if per cluster."""
        if self.single_key:
            return f"{prefix}{self.folder}", False
        if self.per_cluster:
            if not cluster:
                raise ValueError(f"the grant on {self.folder}/ needs a cluster")
            return f"{prefix}{self.folder}/{cluster}/", True
        return f"{prefix}{self.folder}/", True


# Everything else under the prefix is read-only for every role but the operator's.
_OP, _GW, _DISC = (frozenset({w}) for w in (Writer.OPERATOR, Writer.GATEWAY, Writer.DISCOVERY))

WRITERS: tuple[Grant, ...] = (
    Grant(Kind.FEDERATION.value, _OP, single_key=True),
    Grant(Kind.CLUSTER.value, _OP),
    Grant(Kind.SERVICE.value, _OP),
    Grant(Kind.GENERATION.value, _OP, single_key=True),  # the applied generation
    Grant(Kind.APPLYING.value, _OP, single_key=True),  # the apply barrier
    Grant(Kind.GATEWAY.value, _GW, per_cluster=True),
    Grant(Kind.HEALTH.value, _GW, per_cluster=True),  # summary, reports and leader lock
    # discovery runs inside the gateway (``fedgate serve``) or on its own
    Grant(Kind.ENDPOINTS.value, _GW | _DISC, per_cluster=True),
    Grant(Kind.ACME.value, _GW),  # one ACME order per name across the federation
)


# folders under the prefix that hold no routing facts (reserved or owned elsewhere)
IGNORED_FOLDERS = ("ratelimit/",)
# the parts of ``health/{cluster}/``: what the view reads, and what only the leader reads
HEALTH_SUMMARY, HEALTH_REPORT, HEALTH_LOCK = "summary", "report", "lock"
_HEALTH_PARTS = frozenset({HEALTH_SUMMARY, HEALTH_REPORT, HEALTH_LOCK})
_LEADER_ONLY = (HEALTH_REPORT, HEALTH_LOCK)  # the parts no view reads


def view_skips(rest: str) -> bool:
    """Whether a key (without the prefix) feeds no view: reserved folders, and a
    cluster's health reports and leader lock (read by that cluster's leader only)."""
    if rest.startswith(IGNORED_FOLDERS):
        return True
    if not rest.startswith("health/"):
        return False
    parts = rest.split("/")
    return len(parts) == 4 and parts[2] in _LEADER_ONLY


def grants_of(writer: Writer) -> tuple[Grant, ...]:
    return tuple(g for g in WRITERS if writer in g.writers)


# how many path parts follow the kind's folder
_ARITY = {
    Kind.FEDERATION: 0,
    Kind.CLUSTER: 1,
    Kind.SERVICE: 1,
    Kind.GATEWAY: 2,
    Kind.ENDPOINTS: 3,
    Kind.HEALTH: 3,
    Kind.GENERATION: 0,
    Kind.APPLYING: 0,
    Kind.ACME: 2,
}


_KINDS = {kind.value: kind for kind in Kind}


@dataclass(frozen=True, slots=True)
class ParsedKey:
    kind: Kind
    parts: tuple[str, ...]

    @property
    def is_config(self) -> bool:
        return self.kind in CONFIG_KINDS


# ParsedKey(kind, parts) at half the cost (every key of a cold list is parsed)
_PARSED_KEY: Callable[[Kind, tuple[str, ...]], ParsedKey] = builder(ParsedKey)


def parsed_view_skips(parsed: ParsedKey) -> bool:
    """:func:`view_skips` of a key the layout parsed (a key it does not parse: ask
    :func:`view_skips`)."""
    return parsed.kind is Kind.HEALTH and parsed.parts[1] in _LEADER_ONLY


def range_end(prefix: bytes) -> bytes:
    """The etcd range end that covers every key starting with ``prefix``."""
    buf = bytearray(prefix)
    for i in range(len(buf) - 1, -1, -1):
        if buf[i] < 0xFF:
            buf[i] += 1
            return bytes(buf[: i + 1])
    return b"\0"


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Builds and parses keys under one prefix."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/") or not self.prefix.endswith("/"):
            raise ValueError(f"etcd prefix must start and end with '/': {self.prefix!r}")

    # -- builders
    def federation(self) -> str:
        return f"{self.prefix}{Kind.FEDERATION}"

    def cluster(self, name: str) -> str:
        return f"{self.prefix}{Kind.CLUSTER}/{name}"

    def service(self, name: str) -> str:
        return f"{self.prefix}{Kind.SERVICE}/{name}"

    def gateway(self, cluster: str, gateway_id: str) -> str:
        return f"{self.prefix}{Kind.GATEWAY}/{cluster}/{gateway_id}"

    def endpoints(self, service: str, cluster: str, source: str) -> str:
        return f"{self.prefix}{Kind.ENDPOINTS}/{cluster}/{service}/{source}"

    def health_summary(self, cluster: str, name: str) -> str:
        """A cluster's summary of one of its services (``name="*"``: cluster-wide)."""
        return f"{self.prefix}{Kind.HEALTH}/{cluster}/{HEALTH_SUMMARY}/{name}"

    def health_report(self, cluster: str, gateway_id: str) -> str:
        """One gateway's local view, read by its cluster's health leader."""
        return f"{self.prefix}{Kind.HEALTH}/{cluster}/{HEALTH_REPORT}/{gateway_id}"

    def health_lock(self, cluster: str) -> str:
        """The lease-lock of a cluster's health leader."""
        return f"{self.prefix}{Kind.HEALTH}/{cluster}/{HEALTH_LOCK}/leader"

    def health_part(self, cluster: str, part: str) -> str:
        """The folder of one part of a cluster's health (``{p}health/{cluster}/report/``)."""
        return f"{self.prefix}{Kind.HEALTH}/{cluster}/{part}/"

    def generation(self) -> str:
        return f"{self.prefix}{Kind.GENERATION}"

    def applying(self) -> str:
        return f"{self.prefix}{Kind.APPLYING}"

    def acme_lock(self, name: str) -> str:
        return f"{self.prefix}{Kind.ACME}/lock/{name}"

    def acme_challenge(self, token: str) -> str:
        return f"{self.prefix}{Kind.ACME}/challenge/{token}"

    def acme_alpn(self, name: str) -> str:
        """TLS-ALPN-01: the key authorization whose SHA-256 the challenge certificate of
        ``name`` carries."""
        return f"{self.prefix}{Kind.ACME}/alpn/{name}"

    def acme_dns(self, name: str) -> str:
        """DNS-01: the TXT value of ``_acme-challenge.<name>`` (``*.`` left off)."""
        return f"{self.prefix}{Kind.ACME}/dns/{name}"

    def folder(self, kind: Kind) -> str:
        """The prefix of every key of one kind (``{p}clusters/``)."""
        if _ARITY[kind] == 0:
            return f"{self.prefix}{kind}"
        return f"{self.prefix}{kind}/"

    # -- parsing
    def parse(self, key: str | bytes) -> ParsedKey | None:
        """The kind and parts of a key, or None for a key this layout does not know."""
        if isinstance(key, bytes):
            try:
                key = key.decode()
            except UnicodeDecodeError:
                return None
        if not key.startswith(self.prefix):
            return None
        head, _, tail = key[len(self.prefix) :].partition("/")
        kind = _KINDS.get(head)  # a dict lookup: Kind(head) costs ~1 us a key
        if kind is None:
            return None
        parts = tuple(tail.split("/")) if tail else ()
        if len(parts) != _ARITY[kind] or "" in parts:
            return None
        if kind is Kind.HEALTH and parts[1] not in _HEALTH_PARTS:
            return None
        if kind is Kind.ENDPOINTS:  # stored cluster first (a per-cluster prefix)
            parts = (parts[1], parts[0], parts[2])
        return _PARSED_KEY(kind, parts)

    @property
    def prefix_bytes(self) -> bytes:
        return self.prefix.encode()

    @property
    def range_end_bytes(self) -> bytes:
        return range_end(self.prefix_bytes)
