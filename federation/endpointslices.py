"""EndpointSlices in a Kubernetes API server -> model endpoints, one list/watch thread each.

For one manifest service in one namespace, :class:`SliceWatcher` lists the service's
EndpointSlices (``discovery.k8s.io/v1``, label ``kubernetes.io/service-name=<service>``)
with the official ``kubernetes`` client, then watches them from the list's
resourceVersion:

- it resumes from the last resourceVersion it saw, BOOKMARK events included, each time
  a watch ends (``timeout_seconds`` keeps every watch short, so stopping is quick);
- ``410 Gone`` (an ERROR event with code 410, or an HTTP 410) -> list again;
- an unreachable or restarting API server -> reconnect with jittered exponential
  backoff, then list again.

The official client is synchronous, so each loop runs in its own daemon thread and
hands every new state of its slices (:func:`endpoints_from_slices`) to a callback;
``federation.discovery`` merges them and writes etcd.

Conditions follow the EndpointSlice API: ``ready`` (nil means ready), ``serving`` (nil
means as ``ready``), ``terminating``; a terminating endpoint drains (its
:attr:`Endpoint.routable` is False). The port is the slice port whose ``port`` equals
``Service.port``, else the slice's first port.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from federation.logging import get_logger
from federation.model import Endpoint, Service

__all__ = [
    "SERVICE_NAME_LABEL",
    "SOURCE",
    "Backoff",
    "SliceWatcher",
    "endpoints_from_slices",
    "join_all",
    "kubernetes_api_client",
]

log = get_logger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SOURCE = "kubernetes"  # Endpoint.source of every discovered endpoint


def kubernetes_api_client(*, context: str | None = None, in_cluster: bool | None = None) -> Any:
    """An ``ApiClient``: the in-cluster configuration, else the kubeconfig's ``context``.

    ``in_cluster=None`` tries the pod's service account first (``load_incluster_config``:
    its token is re-read as it rotates), then the kubeconfig (``KUBECONFIG`` or
    ``~/.kube/config``) with ``context`` (None: its current context); ``True`` only the
    former, ``False`` only the latter. Raises ``kubernetes.config.ConfigException``.
    """
    import kubernetes

    k8s: Any = kubernetes
    client, config = k8s.client, k8s.config
    if in_cluster is not False:
        try:
            config.load_incluster_config()
            return client.ApiClient()
        except config.ConfigException:
            if in_cluster:
                raise
    # KUBECONFIG read now, not when the kubernetes package was imported
    config_file = os.environ.get("KUBECONFIG") or None
    return config.new_client_from_config(config_file=config_file, context=context)


# ------------------------------------------------------------------- slices -> model


def _get(obj: Any, attr: str, key: str) -> Any:
    """A field of a client model object, or of the same object as a raw dict."""
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, attr, None)


def _pick_port(ports: Sequence[Any] | None, service_port: int) -> int | None:
    numbers = [p for p in (_get(x, "port", "port") for x in ports or ()) if isinstance(p, int)]
    if not numbers:
        return None
    return service_port if service_port in numbers else numbers[0]


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def endpoints_from_slices(
    slices: Iterable[Any], *, service: Service, cluster: str
) -> tuple[Endpoint, ...]:
    """The endpoints of a service from its EndpointSlices (client models or raw dicts).

    One endpoint per address (the first address of each slice endpoint, as the API
    recommends); an address listed twice (a pod moving between slices) keeps its most
    routable entry. Sorted by address.
    """
    best: dict[str, Endpoint] = {}
    for s in slices:
        if _get(s, "address_type", "addressType") not in ("IPv4", "IPv6", "FQDN"):
            continue
        ports = _get(s, "ports", "ports")
        port = service.port if not ports else _pick_port(ports, service.port)
        if port is None:
            continue
        for e in _get(s, "endpoints", "endpoints") or ():
            addresses = _get(e, "addresses", "addresses") or ()
            if not addresses:
                continue
            cond = _get(e, "conditions", "conditions")
            ready_raw = _get(cond, "ready", "ready") if cond is not None else None
            serving_raw = _get(cond, "serving", "serving") if cond is not None else None
            term_raw = _get(cond, "terminating", "terminating") if cond is not None else None
            ready = True if ready_raw is None else bool(ready_raw)
            serving = ready if serving_raw is None else bool(serving_raw)
            ep = Endpoint(
                address=_hostport(str(addresses[0]), port),
                cluster=cluster,
                service=service.name,
                ready=ready,
                serving=serving,
                terminating=bool(term_raw),
                source=SOURCE,
                zone=_get(e, "zone", "zone") or None,
            )
            old = best.get(ep.address)
            if old is None or (ep.routable, ep.serving) > (old.routable, old.serving):
                best[ep.address] = ep
    return tuple(best[a] for a in sorted(best))


# ------------------------------------------------------------------------- backoff


@dataclass
class Backoff:
    """Exponential backoff with full jitter: ``uniform(base, min(cap, base * 2**n))``."""

    base: float = 0.2
    cap: float = 5.0
    rng: random.Random | None = None
    attempts: int = 0

    def next(self) -> float:
        rng = self.rng or random
        high = min(self.cap, self.base * (2**self.attempts))
        self.attempts = min(self.attempts + 1, 30)
        return rng.uniform(min(self.base, high), high)

    def reset(self) -> None:
        self.attempts = 0


# ------------------------------------------------------------ one list/watch thread


class SliceWatcher:
    """List then watch the EndpointSlices of one service in one namespace, in a thread."""

    def __init__(
        self,
        *,
        api_client: Any,
        namespace: str,
        service: Service,
        cluster: str,
        publish: Callable[[SliceWatcher, tuple[Endpoint, ...] | None], None],
        watch_timeout: int,
        request_timeout: float,
        page_size: int,
        backoff: Backoff,
        stats: dict[str, int],
    ) -> None:
        self.namespace = namespace
        self.service = service
        self._api_client = api_client
        self._cluster = cluster
        self._publish = publish
        self._watch_timeout = max(1, watch_timeout)
        self._request_timeout = request_timeout
        self._page_size = max(1, page_size)
        self._backoff = backoff
        self._stats = stats
        self._stop = threading.Event()
        self._watch: Any = None
        self._thread = threading.Thread(
            target=self._run, name=f"discovery-{namespace}-{service.name}", daemon=True
        )
        self._last: tuple[Endpoint, ...] | bool | None = False  # False: nothing published yet

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        w = self._watch
        if w is not None:
            w.stop()  # shuts the socket down: a blocked read returns at once

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _emit(self, slices: Mapping[str, Any]) -> None:
        found = (
            endpoints_from_slices(slices.values(), service=self.service, cluster=self._cluster)
            if slices
            else None
        )
        if found != self._last:
            self._last = found
            self._publish(self, found)

    def _run(self) -> None:
        import kubernetes

        k8s: Any = kubernetes
        client, watch = k8s.client, k8s.watch
        api = client.DiscoveryV1Api(self._api_client)
        selector = f"{SERVICE_NAME_LABEL}={self.service.name}"
        where = {"namespace": self.namespace, "service": self.service.name}
        slices: dict[str, Any] = {}
        rv: str | None = None  # None: list (again) before watching
        gone_in_row = 0  # a server that answers 410 again and again is not hammered
        while not self._stop.is_set():
            try:
                if rv is None:
                    slices, rv = self._list(api, selector)
                    self._stats["lists"] += 1
                    self._emit(slices)
                    self._backoff.reset()
                w = watch.Watch()
                self._watch = w
                if self._stop.is_set():
                    break
                self._stats["watches"] += 1
                for event in w.stream(
                    api.list_namespaced_endpoint_slice,
                    self.namespace,
                    label_selector=selector,
                    resource_version=rv,
                    allow_watch_bookmarks=True,
                    timeout_seconds=self._watch_timeout,
                    _request_timeout=(
                        self._request_timeout,
                        self._watch_timeout + self._request_timeout,
                    ),
                ):
                    kind = event.get("type")
                    if kind == "BOOKMARK":
                        self._stats["bookmarks"] += 1
                        rv = w.resource_version or rv
                        continue
                    obj = event.get("object")
                    name = getattr(getattr(obj, "metadata", None), "name", None)
                    if name is None:
                        continue
                    rv = obj.metadata.resource_version or rv
                    gone_in_row = 0
                    if kind in ("ADDED", "MODIFIED"):
                        slices[name] = obj
                    elif kind == "DELETED":
                        slices.pop(name, None)
                    self._emit(slices)
                gone_in_row = 0
                self._backoff.reset()  # the watch timed out normally: watch again from rv
            except client.ApiException as exc:
                if self._stop.is_set():
                    break
                if exc.status == 410:
                    self._stats["gone"] += 1
                    log.info("endpointslices.gone", **where, reason=str(exc.reason))
                    rv = None  # list again: at once the first time, then with backoff
                    gone_in_row += 1
                    if gone_in_row > 1:
                        self._pause(where, "410 Gone again right after a list")
                    continue
                self._pause(where, f"HTTP {exc.status} {exc.reason}")
            except Exception as exc:  # refused, reset, timeouts: resume from rv after a pause
                if self._stop.is_set():
                    break
                self._pause(where, f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
            finally:
                self._watch = None

    def _list(self, api: Any, selector: str) -> tuple[dict[str, Any], str]:
        """Every slice of the service, in pages; the version of the first page.

        A continue token that expired meanwhile answers 410, like a stale watch: the
        caller lists again from the start.
        """
        slices: dict[str, Any] = {}
        version: str | None = None
        token: str | None = None
        while True:
            page = api.list_namespaced_endpoint_slice(
                self.namespace,
                label_selector=selector,
                limit=self._page_size,
                _request_timeout=(self._request_timeout, self._request_timeout),
                **({"_continue": token} if token else {}),
            )
            if version is None:
                version = str(page.metadata.resource_version)
            for item in page.items or ():
                slices[item.metadata.name] = item
            token = page.metadata._continue or None
            if token is None or self._stop.is_set():
                return slices, version

    def _pause(self, where: Mapping[str, str], error: str) -> None:
        self._stats["errors"] += 1
        delay = self._backoff.next()
        log.warning("endpointslices.unavailable", **where, error=error, retry_in=round(delay, 2))
        self._stop.wait(delay)


def join_all(watchers: Sequence[SliceWatcher], timeout: float) -> None:
    """Wait (in a worker thread) until the watch threads ended, at most ``timeout`` in all."""
    deadline = time.monotonic() + timeout
    for w in watchers:
        w.join(max(0.0, deadline - time.monotonic()))
