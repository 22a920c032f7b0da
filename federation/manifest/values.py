"""Parsers for the manifest's scalar value types: durations, names, hosts, addresses, identities.

Each ``parse_*`` / ``check_*`` function takes the raw YAML value and returns the parsed
value or raises :class:`ValueError` with a short message (no field path: the caller adds
it). They are shared by the wire models (``federation.manifest.schema``) and the
cross-field checks (``federation.manifest.checks``).
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from federation.model import HEADER_NAME

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_HOST_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
_SPIFFE_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SPIFFE_SEGMENT = re.compile(r"[a-zA-Z0-9._-]+")
_HEADER_NAME = HEADER_NAME  # an RFC 9110 token


def parse_duration(value: object, *, allow_zero: bool = False) -> float:
    """``"500ms"``, ``"1s"``, ``"1.5s"``, ``"2m"``, ``"1h"``, ``"1m30s"`` -> seconds.

    Bare numbers are refused: ``timeout: 5`` could mean seconds or milliseconds.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a duration such as '500ms' or '2s', got {_show(value)}")
    if not isinstance(value, str):
        raise ValueError(
            f"expected a duration with a unit such as '{value}s' or '{value}ms', "
            f"got the bare number {value}"
        )
    text = value.strip()
    pos = 0
    total = 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos == 0 or pos != len(text):
        raise ValueError(
            f"not a duration: {value!r} (use a number and a unit: ms, s, m or h, e.g. '500ms')"
        )
    if total < 0 or (total == 0 and not allow_zero):
        raise ValueError(f"must be a positive duration, got {value!r}")
    return total


def check_dns_label(value: str) -> str:
    """An RFC 1123 DNS label: lowercase letters, digits and '-', 1-63 characters."""
    if not value:
        raise ValueError("must not be empty")
    if len(value) > 63:
        raise ValueError(f"must be at most 63 characters, got {len(value)}")
    if not _DNS_LABEL.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a DNS label (lowercase letters, digits and '-', "
            "starting and ending with a letter or digit)"
        )
    return value


def check_route_host(value: str) -> str:
    """An exact hostname or ``*.domain`` (the wildcard is the whole leftmost label); lowercased."""
    host = value.strip().lower()
    if not host:
        raise ValueError("must not be empty")
    if ":" in host:
        raise ValueError(f"{value!r}: a route host has no port (routes match the Host header)")
    if "/" in host:
        raise ValueError(f"{value!r}: a route host has no path (use pathPrefix)")
    if len(host) > 253:
        raise ValueError(f"{value!r}: a hostname has at most 253 characters")
    if host.endswith("."):
        raise ValueError(f"{value!r}: write the host without the trailing dot")
    labels = host.split(".")
    rest = labels
    if labels[0] == "*":
        rest = labels[1:]
        if not rest:
            raise ValueError(f"{value!r}: a wildcard needs a domain, e.g. '*.example.com'")
    for label in rest:
        if "*" in label:
            raise ValueError(
                f"{value!r}: '*' is only allowed as the whole leftmost label, e.g. '*.example.com'"
            )
        if not label:
            raise ValueError(f"{value!r}: empty label in hostname")
        if not _HOST_LABEL.fullmatch(label):
            raise ValueError(f"{value!r}: {label!r} is not a valid hostname label")
    return host


def check_hostname(value: str) -> str:
    """An exact hostname (no wildcard, no trailing dot); lowercased."""
    if value.strip().startswith("*"):
        raise ValueError(f"{value!r}: a wildcard is not allowed here")
    return check_route_host(value)


def check_ip_address(value: str) -> str:
    """An IPv4 or IPv6 address (no port, no brackets); returned in its canonical form."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None


def check_dns_ttl(seconds: float) -> float:
    """A DNS TTL: whole seconds, 0s..1d (RFC 2181 TTLs are integers)."""
    if seconds != int(seconds):
        raise ValueError(f"a DNS TTL is whole seconds, got {seconds:g}s")
    if not 0 <= seconds <= 86400:
        raise ValueError(f"a DNS TTL is 0s..24h, got {seconds:g}s")
    return seconds


def check_network(value: str) -> str:
    """A CIDR (or a single address) as :func:`parse_network` reads it."""
    parse_network(value)
    return value


def check_path_prefix(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"must start with '/', got {value!r}")
    if any(c in value for c in "?#") or any(c.isspace() for c in value):
        raise ValueError(f"{value!r}: a path prefix has no query, fragment or whitespace")
    return value


def check_http_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"must start with '/', got {value!r}")
    if any(c.isspace() for c in value) or "#" in value:
        raise ValueError(f"{value!r}: a request path has no whitespace or fragment")
    return value


def check_port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"a port is 1..65535, got {value}")
    return value


def _check_host(host: str, whole: str) -> None:
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"{whole!r}: unbalanced '[' in IPv6 address")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{whole!r}: not an IPv6 address: {host[1:-1]!r}") from None
        return
    if ":" in host:
        raise ValueError(f"{whole!r}: write an IPv6 address in brackets, e.g. '[::1]:8080'")
    labels = host.lower().split(".")
    if not all(label and _HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{whole!r}: {host!r} is neither an IP address nor a hostname")
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{whole!r}: {host!r} is not an IPv4 address") from None


def check_host_port(value: str) -> str:
    """``host:port`` with a hostname, an IPv4 address or ``[IPv6]``; port 1..65535."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if not port.isdigit():
        raise ValueError(f"{value!r}: the port must be a number")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r}: a port is 1..65535")
    _check_host(host, value)
    return value


def check_url(value: str) -> str:
    """An ``http://`` or ``https://`` URL with a host and an explicit port, nothing else."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{value!r}: not a URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{value!r}: the scheme must be https:// (or http://)")
    if not parts.hostname:
        raise ValueError(f"{value!r}: the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{value!r}: the URL must not carry user information")
    if port is None:
        raise ValueError(f"{value!r}: the URL needs an explicit port, e.g. https://host:15443")
    if not 1 <= port <= 65535:
        raise ValueError(f"{value!r}: a port is 1..65535")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{value!r}: the URL must have no path, query or fragment")
    netloc_host = parts.netloc.rsplit(":", 1)[0]
    _check_host(netloc_host, value)
    return value


def check_spiffe_id(value: str) -> str:
    """A SPIFFE ID as the SPIFFE spec defines it (spiffe://trust-domain/path)."""
    if len(value.encode()) > 2048:
        raise ValueError("a SPIFFE ID has at most 2048 bytes")
    if not value.startswith("spiffe://"):
        raise ValueError(f"{value!r}: a SPIFFE ID starts with 'spiffe://' (lowercase)")
    rest = value[len("spiffe://") :]
    trust_domain, slash, path = rest.partition("/")
    if not trust_domain:
        raise ValueError(f"{value!r}: the SPIFFE ID has no trust domain")
    if len(trust_domain) > 255:
        raise ValueError(f"{value!r}: a trust domain has at most 255 characters")
    if not _SPIFFE_TRUST_DOMAIN.fullmatch(trust_domain):
        raise ValueError(
            f"{value!r}: the trust domain may only hold lowercase letters, digits, '.', '-' "
            "and '_' (no port, user info, query or fragment)"
        )
    if slash:
        for segment in path.split("/"):
            if not segment:
                raise ValueError(f"{value!r}: empty path segment (or trailing '/')")
            if segment in (".", ".."):
                raise ValueError(f"{value!r}: path segments '.' and '..' are not allowed")
            if not _SPIFFE_SEGMENT.fullmatch(segment):
                raise ValueError(
                    f"{value!r}: path segment {segment!r} may only hold letters, digits, "
                    "'.', '-' and '_'"
                )
    return value


def parse_network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR (``10.0.0.0/8``) or a single address (``10.1.2.3`` = ``/32``)."""
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(
                f"{value!r} is neither a SPIFFE ID nor an IP network ({exc})"
            ) from None
        raise ValueError(f"{value!r} has host bits set; did you mean {loose}?") from None


def check_allow_entry(value: str) -> str:
    if value.lower().startswith("spiffe:"):
        return check_spiffe_id(value)
    parse_network(value)
    return value


def check_limit_key(value: str) -> str:
    """``client-ip``, ``peer-identity`` or ``header:<Header-Name>``."""
    if value in ("client-ip", "peer-identity"):
        return value
    if value.startswith("header:"):
        name = value[len("header:") :]
        if not name or not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"{value!r}: expected header:<Header-Name> with a valid header name")
        return value
    raise ValueError(f"expected client-ip, peer-identity or header:<Header-Name>, got {value!r}")


def check_header_name(value: str) -> str:
    """An RFC 9110 field name; returned lower case (header names are case-insensitive)."""
    if not _HEADER_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid header name")
    return value.lower()


def check_header_value(value: str) -> str:
    """A header value a rule may send: visible ASCII, spaces and tabs (no CR, LF or NUL)."""
    bad = next((c for c in value if not (c == "\t" or " " <= c <= "~")), None)
    if bad is not None:
        raise ValueError(f"{value!r}: a header value holds visible ASCII only, got {bad!r}")
    return value


def check_cookie_name(value: str) -> str:
    if not _HEADER_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid cookie name")
    return value


def check_method(value: str) -> str:
    if not _HEADER_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not an HTTP method")
    if value != value.upper():
        raise ValueError(f"methods are case-sensitive: did you mean {value.upper()!r}?")
    return value


def check_exact_host(value: str) -> str:
    """A hostname without wildcard or port (a redirect or rewrite target); lowercased."""
    host = check_route_host(value)
    if host.startswith("*"):
        raise ValueError(f"{value!r}: a wildcard is only allowed in a route's host")
    return host


def _show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


show_value = _show
