"""Types shared by the request path: ASGI callables and the current routing view.

The gateway imports nothing from ``federation`` but ``federation.model`` (the contract
between the two packages) and the protocols below.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from federation.model import RoutingView

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ViewListener = Callable[[RoutingView], None]


class ViewSource(Protocol):
    """Something that yields routing views (the etcd watcher, a snapshot, a manifest file)."""

    @property
    def view(self) -> RoutingView: ...


class ViewHolder:
    """Holds the current routing view; a new one replaces it with a single assignment.

    Readers take ``holder.view`` once per request and keep that object for the whole
    request, so a swap never changes a request in flight. Listeners run synchronously
    after each swap, on the event loop: they must be quick (compile a route table,
    resize a rate limit), never await.
    """

    __slots__ = ("_listeners", "view")

    def __init__(self, view: RoutingView | None = None) -> None:
        self.view: RoutingView = view if view is not None else RoutingView()
        self._listeners: list[ViewListener] = []

    def subscribe(self, listener: ViewListener) -> None:
        self._listeners.append(listener)
        listener(self.view)

    def swap(self, view: RoutingView) -> None:
        for listener in self._listeners:
            listener(view)  # derived state first, so it is ready when the view is
        self.view = view
