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
``{p}endpoints/{service}/{cluster}/{src}``  [Endpoint, ...]             discovery, lease
``{p}health/{observer}``                    [Observation, ...]          gateway, lease
``{p}ratelimit/{service}``                  (reserved)                  -
``{p}generation``                           {"generation", "applied"}   fedgate apply
``{p}applying``                             the apply barrier           fedgate apply
==========================================  ==========================  =============

``fedgate apply`` owns ``federation``, ``clusters/`` and ``services/`` (the *config*
keys); everything else is written under a lease by the process that knows the fact,
so it vanishes with that process.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

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


CONFIG_KINDS = frozenset({Kind.FEDERATION, Kind.CLUSTER, Kind.SERVICE, Kind.GENERATION})
# config kinds a watcher holds back while an apply barrier (``applying``) stands: the
# manifest's keys and the generation written by the apply's last transaction
HELD_KINDS = CONFIG_KINDS

# how many path parts follow the kind's folder
_ARITY = {
    Kind.FEDERATION: 0,
    Kind.CLUSTER: 1,
    Kind.SERVICE: 1,
    Kind.GATEWAY: 2,
    Kind.ENDPOINTS: 3,
    Kind.HEALTH: 1,
    Kind.GENERATION: 0,
    Kind.APPLYING: 0,
}


@dataclass(frozen=True, slots=True)
class ParsedKey:
    kind: Kind
    parts: tuple[str, ...]

    @property
    def is_config(self) -> bool:
        return self.kind in CONFIG_KINDS


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
        return f"{self.prefix}{Kind.ENDPOINTS}/{service}/{cluster}/{source}"

    def health(self, observer: str) -> str:
        return f"{self.prefix}{Kind.HEALTH}/{observer}"

    def generation(self) -> str:
        return f"{self.prefix}{Kind.GENERATION}"

    def applying(self) -> str:
        return f"{self.prefix}{Kind.APPLYING}"

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
        rest = key[len(self.prefix) :]
        head, _, tail = rest.partition("/")
        try:
            kind = Kind(head)
        except ValueError:
            return None
        parts = tuple(tail.split("/")) if tail else ()
        if len(parts) != _ARITY[kind] or any(not p for p in parts):
            return None
        return ParsedKey(kind, parts)

    @property
    def prefix_bytes(self) -> bytes:
        return self.prefix.encode()

    @property
    def range_end_bytes(self) -> bytes:
        return range_end(self.prefix_bytes)
