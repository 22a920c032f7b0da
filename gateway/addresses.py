"""The one ``host:port`` parser of the data plane (endpoints, east-west URLs, listeners)."""

from __future__ import annotations


def split_host_port(value: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` (or, with ``default_port``, ``host``, ``[v6]``, ``v6``)
    -> (host without brackets, port). Raises ValueError with a one-line message."""
    port_s: str | None
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1 :] if end > 0 else "x"
        host = value[1:end]
        if rest and not rest.startswith(":"):
            raise ValueError(f"{value!r}: expected host:port")
        port_s = rest[1:] if rest else None
    elif value.count(":") == 1:
        host, _, port_s = value.partition(":")
    else:  # a name, or a bare IPv6 address: no port
        host, port_s = value, None
    if port_s is None:
        if default_port is None:
            raise ValueError(f"{value!r}: expected host:port")
        return _checked(value, host, default_port)
    if not port_s.isdigit():
        raise ValueError(f"{value!r}: expected host:port")
    return _checked(value, host, int(port_s))


def _checked(value: str, host: str, port: int) -> tuple[str, int]:
    if not host or port > 65535:
        raise ValueError(f"{value!r}: expected host:port")
    return host, port
