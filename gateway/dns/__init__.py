"""The federation's authoritative DNS: answers steered by the request path's placement.

- :mod:`gateway.dns.names`    the zones and names of a view (SOA, NS, route hosts)
- :mod:`gateway.dns.answers`  which clusters an answer names (placement + strategy)
- :mod:`gateway.dns.resolve`  one question -> rcode and records, free of the wire format
- :mod:`gateway.dns.wire`     dnspython: parse, EDNS(0), Client Subnet, truncation
- :mod:`gateway.dns.server`   UDP + TCP on the event loop, response-rate limiting
- :mod:`gateway.dns.report`   the global-health section and ``explain --dns``
- :mod:`gateway.dns.metrics`  the listener's counters on ``/metrics``

See ``docs/dns.md``.
"""

from gateway.dns.answers import DnsAnswers, Selection
from gateway.dns.server import DnsServer
from gateway.dns.wire import Responder

__all__ = ["DnsAnswers", "DnsServer", "Responder", "Selection"]
