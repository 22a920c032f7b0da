"""Free loopback ports (the implementation lives in federation.devstack, shared with the demo)."""

from federation.devstack.ports import free_port, free_ports

__all__ = ["free_port", "free_ports"]
