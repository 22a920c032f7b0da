"""The federation-wide rate limit's share: how many gateways split it.

A service with ``rateLimit.scope: federation`` has one limit for the whole federation.
Every gateway takes ``1/count`` of it, where ``count`` is the number of live gateways:
the :class:`~federation.model.GatewayRecord` keys present in the routing view, each
bound to its gateway's etcd lease (a gateway that dies drops out when its lease
expires, one that starts appears when it registers). The composition root calls
``limiter.set_live_gateways(live_gateway_count(view))`` on every view swap, so the
shares follow the gateways without etcd on the request path.
"""

from __future__ import annotations

from federation.model import RoutingView

__all__ = ["live_gateway_count"]


def live_gateway_count(view: RoutingView) -> int:
    """Live gateways in the federation (at least 1: this gateway, even before it registers)."""
    return max(1, len(view.gateways))
