"""A Kubernetes API-server double for the tests: real HTTP, the real wire format.

No Kubernetes API server can run on this machine, so the discovery tests (and the
OpenBao Kubernetes-auth test) talk to this one. It is a real HTTP/1.1 server on a
loopback address, and the official ``kubernetes`` client talks to it unchanged
(``kubernetes.client.Configuration(host=api.url)``).

What it serves
--------------
``GET  /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices``
    ``labelSelector`` (equality: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, comma = AND),
    ``limit`` / ``continue`` (a stale continue token -> HTTP 410 ``Expired``).
    Answer: an ``EndpointSliceList`` with ``metadata.resourceVersion``.
``GET  ...endpointslices?watch=true&resourceVersion=N&allowWatchBookmarks=true&timeoutSeconds=S``
    newline-delimited JSON watch events (``ADDED``/``MODIFIED``/``DELETED``/``BOOKMARK``)
    for every change after ``N``, chunked, until ``timeoutSeconds`` passes. ``N`` older
    than the history it keeps (see :meth:`KubeApiServer.compact`) -> one ``ERROR`` event
    whose object is a ``Status`` with ``code: 410``, ``reason: Expired``, message
    ``too old resource version: N (M)``. ``N`` empty or ``"0"``: ``ADDED`` for every
    current object first.
``GET  /apis/discovery.k8s.io/v1/endpointslices`` (all namespaces), same options.
``POST /apis/authentication.k8s.io/v1/tokenreviews``
    a real ``TokenReview``: ``status.authenticated``, ``status.user`` (``username``
    ``system:serviceaccount:<ns>:<sa>``, ``uid``, ``groups``), ``status.audiences``, for
    the tokens it issued or was told about; ``authenticated: false`` with an ``error``
    otherwise. With :meth:`KubeApiServer.require_reviewer`, the caller's bearer token must
    be one of the allowed reviewer tokens (401 without a token, 403 for another one).
``GET  /version``, ``GET /healthz``, ``GET /readyz``.

The class API (``tests.support.kube_api.KubeApiServer``)
--------------------------------------------------------
::

    with KubeApiServer(host="127.0.0.9") as api:          # free port, started
        api.url                                          # "http://127.0.0.9:PORT"
        api.configuration()                              # kubernetes.client.Configuration
        # EndpointSlices
        api.add_service("shop", "checkout", ports=[("http", 8080)], slice_size=100)
        api.scale("shop", "checkout", 3, zone="eu-1a")   # -> pod names (adds or removes pods)
        api.add_pod("shop", "checkout", ip="127.0.0.5", zone="eu-1b")  # -> pod name
        api.set_pod("shop", pod, ready=False)            # ready / serving / terminating
        api.terminate_pod("shop", pod)                   # terminating, not ready, still serving
        api.remove_pod("shop", pod)
        api.delete_service("shop", "checkout")           # every slice of the service gone
        api.endpoints("shop", "checkout")                # the truth: [{address, ready, ...}]
        api.resource_version                             # current resourceVersion (int)
        api.compact()                                    # forget history: older versions -> 410
        api.stop(); api.start()                          # down / up again on the same port
        api.restart(compact=True)                        # both; open watches are cut
        api.stats                                        # counters: lists, watches, gone, ...
        # TokenReview (OpenBao / Vault Kubernetes auth)
        token = api.issue_token("shop", "fedgate", audiences=("vault",))   # an RS256 JWT
        api.add_token("opaque-token", namespace="shop", service_account="x")
        api.revoke_token(token)
        api.require_reviewer(reviewer_token)             # TokenReview callers must send it
        api.service_account_uid("shop", "fedgate")
        api.issuer_public_key_pem                         # to verify the issued JWTs
        api.token_reviews                                 # every TokenReview body received

Every mutation bumps the resourceVersion of each object it changes, like the real API
server, and wakes the watches. The double keeps the objects across :meth:`stop` /
:meth:`start` (its "etcd" survives a restart); :meth:`restart` with ``compact=True``
also forgets the watch history, as a real API server's watch cache does.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.ports import free_port

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
SLICE_PATH = "/apis/discovery.k8s.io/v1/namespaces/"
ALL_SLICES_PATH = "/apis/discovery.k8s.io/v1/endpointslices"
TOKENREVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# ----------------------------------------------------------------- label selectors


def _selector(text: str) -> list[tuple[str, str, str | None]]:
    """``a=b,c!=d,e,!f`` -> [(op, key, value)] with op in =, !=, exists, !exists."""
    terms: list[tuple[str, str, str | None]] = []
    for raw in text.split(","):
        term = raw.strip()
        if not term:
            continue
        if "!=" in term:
            k, v = term.split("!=", 1)
            terms.append(("!=", k.strip(), v.strip()))
        elif "==" in term:
            k, v = term.split("==", 1)
            terms.append(("=", k.strip(), v.strip()))
        elif "=" in term:
            k, v = term.split("=", 1)
            terms.append(("=", k.strip(), v.strip()))
        elif term.startswith("!"):
            terms.append(("!exists", term[1:].strip(), None))
        else:
            terms.append(("exists", term, None))
    return terms


def _matches(labels: dict[str, str], terms: list[tuple[str, str, str | None]]) -> bool:
    for op, key, value in terms:
        if op == "=" and labels.get(key) != value:
            return False
        if op == "!=" and labels.get(key) == value:
            return False
        if op == "exists" and key not in labels:
            return False
        if op == "!exists" and key in labels:
            return False
    return True


# --------------------------------------------------------------------------- state


@dataclass
class _Pod:
    name: str
    ip: str
    zone: str | None
    node: str
    uid: str
    slice: str  # name of the EndpointSlice it is listed in
    ready: bool = True
    serving: bool = True
    terminating: bool = False


@dataclass
class _Service:
    namespace: str
    name: str
    ports: list[tuple[str, int, str]]  # (name, port, protocol)
    slice_size: int
    address_type: str
    pods: dict[str, _Pod] = field(default_factory=dict)
    slices: list[str] = field(default_factory=list)  # slice names, in creation order
    pod_seq: int = 0


@dataclass(frozen=True)
class _Event:
    rv: int
    type: str
    namespace: str
    obj: dict[str, Any]


@dataclass(frozen=True)
class _Token:
    namespace: str
    service_account: str
    uid: str
    audiences: tuple[str, ...]
    extra: dict[str, list[str]]


class KubeApiServer:
    """See the module docstring for the API."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        history: int = 10_000,
        bookmark_interval: float = 1.0,
        start_rv: int = 1000,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.bookmark_interval = bookmark_interval
        self._history_limit = history
        self._cond = threading.Condition()
        self._rv = start_rv
        self._oldest = start_rv  # watches from a version below this get 410
        self._events: list[_Event] = []
        self._objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._services: dict[tuple[str, str], _Service] = {}
        self._ip_seq = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._generation = 0  # bumped by stop(): open watches of an older generation end
        self._conns: set[socket.socket] = set()
        self._tokens: dict[str, _Token] = {}
        self._sa_uids: dict[tuple[str, str], str] = {}
        self._reviewers: set[str] | None = None
        self.token_reviews: list[dict[str, Any]] = []
        self.stats: dict[str, int] = {
            "lists": 0,
            "watches": 0,
            "gone": 0,
            "bookmarks": 0,
            "events_sent": 0,
            "token_reviews": 0,
            "restarts": 0,
        }
        self._key: Any = None  # RSA key for issue_token, made on first use

    # ------------------------------------------------------------------ life cycle
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def configuration(self) -> Any:
        """A ``kubernetes.client.Configuration`` pointing at this server."""
        from kubernetes import client

        cfg = client.Configuration(host=self.url)
        cfg.verify_ssl = False
        return cfg

    def start(self) -> KubeApiServer:
        if self._server is not None:
            return self
        owner = self

        class Handler(_Handler):
            api = owner

        deadline = time.monotonic() + 10
        while True:
            try:
                server = _Server((self.host, self.port), Handler)
                break
            except OSError:  # the old socket may linger a moment after a restart
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # pacing: a bounded retry of bind() while the port frees up
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (watches end without a goodbye)."""
        server, self._server = self._server, None
        if server is None:
            return
        with self._cond:
            self._generation += 1
            conns = list(self._conns)
            self._cond.notify_all()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None

    def restart(self, *, compact: bool = False) -> None:
        """Stop and start on the same port; ``compact``: old versions answer 410 afterwards."""
        self.stop()
        if compact:
            self.compact()
        self.stats["restarts"] += 1
        self.start()

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------- the versions
    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def compact(self) -> int:
        """Forget the watch history: a watch from an older version gets 410 Gone."""
        with self._cond:
            self._oldest = self._rv
            self._events.clear()
            return self._rv

    def _record(self, type_: str, namespace: str, name: str, obj: dict[str, Any] | None) -> None:
        """Under the lock: bump the version, store the object, log the event."""
        self._rv += 1
        key = (namespace, name)
        if obj is None:
            gone = self._objects.pop(key)
            gone = copy.deepcopy(gone)
            gone["metadata"]["resourceVersion"] = str(self._rv)
            self._events.append(_Event(self._rv, "DELETED", namespace, gone))
        else:
            obj["metadata"]["resourceVersion"] = str(self._rv)
            self._objects[key] = obj
            self._events.append(_Event(self._rv, type_, namespace, copy.deepcopy(obj)))
        if len(self._events) > self._history_limit:
            drop = len(self._events) - self._history_limit
            self._oldest = self._events[drop - 1].rv
            del self._events[:drop]
        self._cond.notify_all()

    # ------------------------------------------------------------ EndpointSlices
    def add_service(
        self,
        namespace: str,
        service: str,
        *,
        ports: Sequence[tuple[str, int]] | Sequence[tuple[str, int, str]] = (("http", 8080),),
        slice_size: int = 100,
        address_type: str = "IPv4",
    ) -> None:
        """A Service with no pods yet: one empty EndpointSlice (as the controller makes)."""
        with self._cond:
            if (namespace, service) in self._services:
                raise ValueError(f"service {namespace}/{service} exists")
            norm = [(p[0], p[1], p[2] if len(p) > 2 else "TCP") for p in ports]  # type: ignore[misc]
            svc = _Service(namespace, service, norm, max(1, slice_size), address_type)
            self._services[(namespace, service)] = svc
            self._new_slice(svc)

    def scale(
        self, namespace: str, service: str, replicas: int, *, zone: str | None = "zone-a"
    ) -> list[str]:
        """Add or remove (newest first) pods until the service has ``replicas``; pod names."""
        with self._cond:
            svc = self._svc(namespace, service)
            while len(svc.pods) < replicas:
                self._add_pod(svc, ip=None, zone=zone, ready=True)
            while len(svc.pods) > replicas:
                self._remove_pod(svc, list(svc.pods)[-1])
            return list(svc.pods)

    def add_pod(
        self,
        namespace: str,
        service: str,
        *,
        ip: str | None = None,
        zone: str | None = "zone-a",
        ready: bool = True,
    ) -> str:
        with self._cond:
            return self._add_pod(self._svc(namespace, service), ip=ip, zone=zone, ready=ready)

    def set_pod(
        self,
        namespace: str,
        pod: str,
        *,
        ready: bool | None = None,
        serving: bool | None = None,
        terminating: bool | None = None,
    ) -> None:
        with self._cond:
            svc, p = self._pod(namespace, pod)
            if ready is not None:
                p.ready = ready
            if serving is not None:
                p.serving = serving
            if terminating is not None:
                p.terminating = terminating
            self._write_slice(svc, p.slice)

    def terminate_pod(self, namespace: str, pod: str) -> None:
        """A pod being deleted: terminating, not ready, still serving (draining)."""
        self.set_pod(namespace, pod, ready=False, serving=True, terminating=True)

    def remove_pod(self, namespace: str, pod: str) -> None:
        with self._cond:
            svc, _ = self._pod(namespace, pod)
            self._remove_pod(svc, pod)

    def delete_service(self, namespace: str, service: str) -> None:
        with self._cond:
            svc = self._services.pop((namespace, service))
            for name in svc.slices:
                self._record("DELETED", namespace, name, None)

    def endpoints(self, namespace: str, service: str) -> list[dict[str, Any]]:
        """The truth: every endpoint of the service, sorted by address."""
        with self._cond:
            svc = self._services.get((namespace, service))
            if svc is None:
                return []
            return sorted(
                (
                    {
                        "pod": p.name,
                        "ip": p.ip,
                        "ready": p.ready,
                        "serving": p.serving,
                        "terminating": p.terminating,
                        "zone": p.zone,
                    }
                    for p in svc.pods.values()
                ),
                key=lambda e: str(e["ip"]),
            )

    def slices(self, namespace: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [
                copy.deepcopy(o)
                for (ns, _), o in sorted(self._objects.items())
                if namespace is None or ns == namespace
            ]

    def has_service(self, namespace: str, service: str) -> bool:
        with self._cond:
            return (namespace, service) in self._services

    # -- internals (lock held)
    def _svc(self, namespace: str, service: str) -> _Service:
        try:
            return self._services[(namespace, service)]
        except KeyError:
            raise KeyError(f"no service {namespace}/{service}") from None

    def _pod(self, namespace: str, pod: str) -> tuple[_Service, _Pod]:
        for (ns, _), svc in self._services.items():
            if ns == namespace and pod in svc.pods:
                return svc, svc.pods[pod]
        raise KeyError(f"no pod {namespace}/{pod}")

    def _new_slice(self, svc: _Service, pod: _Pod | None = None) -> str:
        """A new slice (holding ``pod``, if given), written once with its endpoints."""
        name = f"{svc.name}-{uuid.uuid4().hex[:5]}"
        svc.slices.append(name)
        if pod is not None:
            pod.slice = name
            svc.pods[pod.name] = pod
        self._write_slice(svc, name, created=True)
        return name

    def _add_pod(self, svc: _Service, *, ip: str | None, zone: str | None, ready: bool) -> str:
        svc.pod_seq += 1
        name = f"{svc.name}-{uuid.uuid4().hex[:6]}-{svc.pod_seq}"
        if ip is None:
            self._ip_seq += 1
            n = self._ip_seq
            ip = f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
        counts = {s: 0 for s in svc.slices}
        for p in svc.pods.values():
            counts[p.slice] += 1
        target = next((s for s in svc.slices if counts[s] < svc.slice_size), None)
        pod = _Pod(
            name=name,
            ip=ip,
            zone=zone,
            node=f"node-{(svc.pod_seq % 3) + 1}",
            uid=str(uuid.uuid4()),
            slice=target or "",
            ready=ready,
            serving=ready,
        )
        if target is None:
            self._new_slice(svc, pod)
        else:
            svc.pods[name] = pod
            self._write_slice(svc, target)
        return name

    def _remove_pod(self, svc: _Service, pod: str) -> None:
        p = svc.pods.pop(pod)
        still = any(q.slice == p.slice for q in svc.pods.values())
        if not still and len(svc.slices) > 1:  # keep one (empty) slice, like the controller
            svc.slices.remove(p.slice)
            self._record("DELETED", svc.namespace, p.slice, None)
        else:
            self._write_slice(svc, p.slice)

    def _write_slice(self, svc: _Service, name: str, *, created: bool = False) -> None:
        old = self._objects.get((svc.namespace, name))
        meta: dict[str, Any] = {
            "name": name,
            "generateName": f"{svc.name}-",
            "namespace": svc.namespace,
            "uid": old["metadata"]["uid"] if old else str(uuid.uuid4()),
            "generation": (old["metadata"]["generation"] + 1) if old else 1,
            "creationTimestamp": (
                old["metadata"]["creationTimestamp"]
                if old
                else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            ),
            "labels": {
                SERVICE_NAME_LABEL: svc.name,
                MANAGED_BY_LABEL: "endpointslice-controller.k8s.io",
            },
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "name": svc.name,
                    "uid": self.service_uid(svc.namespace, svc.name),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
        endpoints = [
            {
                "addresses": [p.ip],
                "conditions": {
                    "ready": p.ready,
                    "serving": p.serving,
                    "terminating": p.terminating,
                },
                "targetRef": {
                    "kind": "Pod",
                    "namespace": svc.namespace,
                    "name": p.name,
                    "uid": p.uid,
                },
                "nodeName": p.node,
                **({"zone": p.zone} if p.zone else {}),
            }
            for p in svc.pods.values()
            if p.slice == name
        ]
        obj = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": meta,
            "addressType": svc.address_type,
            "endpoints": endpoints or None,
            "ports": [{"name": n, "port": port, "protocol": proto} for n, port, proto in svc.ports],
        }
        if obj["endpoints"] is None:
            del obj["endpoints"]  # the API server omits an empty list
        self._record("ADDED" if created or old is None else "MODIFIED", svc.namespace, name, obj)

    def service_uid(self, namespace: str, name: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"svc/{namespace}/{name}"))

    # ------------------------------------------------------------------ tokens
    def service_account_uid(self, namespace: str, service_account: str) -> str:
        with self._cond:
            key = (namespace, service_account)
            if key not in self._sa_uids:
                self._sa_uids[key] = str(uuid.uuid4())
            return self._sa_uids[key]

    def add_token(
        self,
        token: str,
        *,
        namespace: str,
        service_account: str,
        audiences: Iterable[str] = (),
        extra: dict[str, list[str]] | None = None,
    ) -> None:
        """Make ``token`` authenticate as ``system:serviceaccount:<namespace>:<sa>``."""
        uid = self.service_account_uid(namespace, service_account)
        with self._cond:
            self._tokens[token] = _Token(
                namespace, service_account, uid, tuple(audiences), dict(extra or {})
            )

    def revoke_token(self, token: str) -> None:
        with self._cond:
            self._tokens.pop(token, None)

    def require_reviewer(self, *tokens: str) -> None:
        """TokenReview callers must present one of these bearer tokens (none: anyone)."""
        with self._cond:
            self._reviewers = set(tokens) if tokens else None

    @property
    def issuer(self) -> str:
        return "https://kubernetes.default.svc.cluster.local"

    def _rsa(self) -> Any:
        if self._key is None:
            from cryptography.hazmat.primitives.asymmetric import rsa

            self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return self._key

    @property
    def issuer_public_key_pem(self) -> str:
        from cryptography.hazmat.primitives import serialization

        return (
            self._rsa()
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def issue_token(
        self,
        namespace: str,
        service_account: str,
        *,
        audiences: Sequence[str] = ("https://kubernetes.default.svc.cluster.local",),
        ttl: float = 3600.0,
        pod: str | None = None,
    ) -> str:
        """A projected service-account token (RS256 JWT) this server will accept."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        uid = self.service_account_uid(namespace, service_account)
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": list(audiences),
            "exp": now + int(ttl),
            "iat": now,
            "nbf": now,
            "iss": self.issuer,
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": service_account, "uid": uid},
                **(
                    {"pod": {"name": pod, "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, pod))}}
                    if pod
                    else {}
                ),
            },
        }
        header = {"alg": "RS256", "kid": "fedgate-test", "typ": "JWT"}
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = self._rsa().sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        token = signing_input + "." + _b64url(signature)
        self.add_token(
            token,
            namespace=namespace,
            service_account=service_account,
            audiences=audiences,
            extra={"authentication.kubernetes.io/pod-name": [pod]} if pod else None,
        )
        return token

    def _review(self, body: dict[str, Any], caller: str | None) -> tuple[int, dict[str, Any]]:
        with self._cond:
            self.stats["token_reviews"] += 1
            self.token_reviews.append(copy.deepcopy(body))
            reviewers = self._reviewers
            if reviewers is not None:
                if caller is None:
                    return 401, _status(401, "Unauthorized", "Unauthorized")
                if caller not in reviewers:
                    return 403, _status(
                        403,
                        "Forbidden",
                        'tokenreviews.authentication.k8s.io is forbidden: User "system:anonymous"'
                        ' cannot create resource "tokenreviews" in API group'
                        ' "authentication.k8s.io" at the cluster scope',
                    )
            spec = body.get("spec") or {}
            if body.get("kind", "TokenReview") != "TokenReview" or not isinstance(spec, dict):
                return 400, _status(400, "BadRequest", "expected a TokenReview")
            token = spec.get("token") or ""
            wanted = list(spec.get("audiences") or [])
            known = self._tokens.get(token)
        answer: dict[str, Any] = {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
        }
        if known is None:
            answer["status"] = {"user": {}, "error": "[invalid bearer token, token lookup failed]"}
            return 201, answer
        if wanted and known.audiences and not set(wanted) & set(known.audiences):
            answer["status"] = {
                "user": {},
                "error": "[invalid bearer token, token audiences is invalid]",
            }
            return 201, answer
        ns, sa = known.namespace, known.service_account
        answer["status"] = {
            "authenticated": True,
            "user": {
                "username": f"system:serviceaccount:{ns}:{sa}",
                "uid": known.uid,
                "groups": [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{ns}",
                    "system:authenticated",
                ],
                **({"extra": known.extra} if known.extra else {}),
            },
            "audiences": wanted or list(known.audiences) or [self.issuer],
        }
        return 201, answer

    # ------------------------------------------------------------------ HTTP side
    def _list(self, namespace: str | None, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        terms = _selector(query.get("labelSelector", ""))
        limit = int(query.get("limit") or 0)
        start = 0
        with self._cond:
            self.stats["lists"] += 1
            rv = self._rv
            token = query.get("continue")
            if token:
                try:
                    state = json.loads(base64.urlsafe_b64decode(token + "==="))
                    token_rv, start = int(state["rv"]), int(state["start"])
                except (ValueError, KeyError, TypeError):
                    return 400, _status(400, "BadRequest", "invalid continue token")
                if token_rv < self._oldest:
                    self.stats["gone"] += 1
                    return 410, _status(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent"
                        " list result. You can start a new list without the continue"
                        " parameter.",
                    )
                rv = token_rv
            items = [
                copy.deepcopy(o)
                for (ns, _), o in sorted(self._objects.items())
                if (namespace is None or ns == namespace)
                and _matches(o["metadata"]["labels"], terms)
            ]
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if limit > 0:
            page = items[start : start + limit]
            if start + limit < len(items):
                meta["continue"] = _b64url(json.dumps({"rv": rv, "start": start + limit}).encode())
                meta["remainingItemCount"] = len(items) - start - limit
            items = page
        return 200, {
            "kind": "EndpointSliceList",
            "apiVersion": "discovery.k8s.io/v1",
            "metadata": meta,
            "items": items,
        }

    def _watch(self, handler: _Handler, namespace: str | None, query: dict[str, str]) -> None:
        terms = _selector(query.get("labelSelector", ""))
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("true", "1")
        timeout = float(query.get("timeoutSeconds") or 1800)
        since_raw = query.get("resourceVersion", "")
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Cache-Control", "no-cache, private")
        handler.end_headers()
        deadline = time.monotonic() + timeout
        gone: dict[str, Any] | None = None
        with self._cond:
            self.stats["watches"] += 1
            generation = self._generation
            initial: list[dict[str, Any]] = []
            if since_raw in ("", "0"):
                since = self._rv
                initial = [
                    {"type": "ADDED", "object": copy.deepcopy(o)}
                    for (ns, _), o in sorted(self._objects.items())
                    if (namespace is None or ns == namespace)
                    and _matches(o["metadata"]["labels"], terms)
                ]
            else:
                try:
                    since = int(since_raw)
                except ValueError:
                    since = -1
                if since < self._oldest:
                    self.stats["gone"] += 1
                    oldest = self._oldest
                    gone = {
                        "type": "ERROR",
                        "object": _status(
                            410, "Expired", f"too old resource version: {since_raw} ({oldest})"
                        ),
                    }
        if gone is not None:
            handler.send_chunk(gone)
            handler.end_chunks()
            return
        for ev in initial:
            handler.send_chunk(ev)
        next_bookmark = time.monotonic() + self.bookmark_interval
        while True:
            with self._cond:
                if self._generation != generation:
                    raise ConnectionAbortedError("server stopped")
                if since < self._oldest:  # compacted under a running watch
                    self.stats["gone"] += 1
                    out: list[dict[str, Any]] = [
                        {
                            "type": "ERROR",
                            "object": _status(
                                410,
                                "Expired",
                                f"too old resource version: {since} ({self._oldest})",
                            ),
                        }
                    ]
                    done = True
                else:
                    done = False
                    out = []
                    for ev in self._events:
                        if ev.rv <= since:
                            continue
                        if (namespace is None or ev.namespace == namespace) and _matches(
                            ev.obj["metadata"]["labels"], terms
                        ):
                            out.append({"type": ev.type, "object": copy.deepcopy(ev.obj)})
                    since = self._rv
                    now = time.monotonic()
                    if not out and now < deadline:
                        if bookmarks and now >= next_bookmark:
                            out.append(
                                {
                                    "type": "BOOKMARK",
                                    "object": {
                                        "kind": "EndpointSlice",
                                        "apiVersion": "discovery.k8s.io/v1",
                                        "metadata": {"resourceVersion": str(self._rv)},
                                        "addressType": "",
                                        "endpoints": None,
                                    },
                                }
                            )
                            self.stats["bookmarks"] += 1
                            next_bookmark = now + self.bookmark_interval
                        else:
                            wait = min(deadline, next_bookmark if bookmarks else deadline) - now
                            self._cond.wait(timeout=max(0.01, min(wait, 1.0)))
                            continue
                    self.stats["events_sent"] += sum(1 for e in out if e["type"] != "BOOKMARK")
            for ev in out:
                handler.send_chunk(ev)
            if done or time.monotonic() >= deadline:
                handler.end_chunks()
                return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


class _Handler(BaseHTTPRequestHandler):
    api: KubeApiServer
    protocol_version = "HTTP/1.1"
    server_version = "kube-apiserver-double/1.31"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.api._cond:
            self.api._conns.add(self.connection)

    def finish(self) -> None:
        with self.api._cond:
            self.api._conns.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    # -- writing
    def send_json(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_chunk(self, event: dict[str, Any]) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _bearer(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip() or None
        return None

    # -- routing
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        path = url.path.rstrip("/")
        try:
            if path in ("/healthz", "/readyz", "/livez"):
                data = b"ok"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            if path == "/version":
                self.send_json(
                    200,
                    {"major": "1", "minor": "31", "gitVersion": "v1.31.0-fedgate-double"},
                )
                return
            namespace: str | None
            if path == ALL_SLICES_PATH:
                namespace = None
            elif path.startswith(SLICE_PATH) and path.endswith("/endpointslices"):
                namespace = path[len(SLICE_PATH) : -len("/endpointslices")]
                if not namespace or "/" in namespace:
                    self.send_json(404, _status(404, "NotFound", "the server could not find it"))
                    return
            else:
                self.send_json(
                    404,
                    _status(404, "NotFound", "the server could not find the requested resource"),
                )
                return
            if query.get("watch", "").lower() in ("true", "1"):
                self.api._watch(self, namespace, query)
                self.close_connection = True
            else:
                code, body = self.api._list(namespace, query)
                self.send_json(code, body)
        except (ConnectionError, OSError):
            self.close_connection = True

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            if url.path.rstrip("/") != TOKENREVIEW_PATH:
                self.send_json(
                    404,
                    _status(404, "NotFound", "the server could not find the requested resource"),
                )
                return
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self.send_json(400, _status(400, "BadRequest", "the body is not JSON"))
                return
            if not isinstance(body, dict):
                self.send_json(400, _status(400, "BadRequest", "expected a TokenReview"))
                return
            code, answer = self.api._review(body, self._bearer())
            self.send_json(code, answer)
        except (ConnectionError, OSError):
            self.close_connection = True
