"""The data plane's own settings and its one host:port parser."""

from __future__ import annotations

import resource

import pytest

from gateway.addresses import split_host_port
from gateway.config import DataPlaneSettings, default_max_connections, fd_budget, raise_fd_limit
from tests.gateway.harness import settings_for


def test_from_process_settings() -> None:
    s = DataPlaneSettings.from_settings(settings_for("c9", limits={"headerTimeout": 3}))
    assert s.cluster == "c9" and s.insecure_east_west and s.fast_path
    assert s.limits.header_timeout == 3
    assert s.limits.max_connections == default_max_connections() > 0
    assert DataPlaneSettings.from_settings(s) is s


@pytest.mark.parametrize("value", [0, -5])
def test_a_nonsense_connection_cap_means_the_default(value: int) -> None:
    s = DataPlaneSettings.from_settings(settings_for(limits={"maxConnections": value}))
    assert s.limits.max_connections == default_max_connections()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.1:80", ("10.0.0.1", 80)),
        ("[::1]:8443", ("::1", 8443)),
        ("gw.example", ("gw.example", 443)),
        ("[fe80::1]", ("fe80::1", 443)),
        ("fe80::1", ("fe80::1", 443)),
    ],
)
def test_split_host_port(value: str, expected: tuple[str, int]) -> None:
    assert split_host_port(value, 443) == expected


@pytest.mark.parametrize("value", ["", ":80", "h:x", "h:99999", "[::1]x", "h"])
def test_split_host_port_rejects_with_one_line(value: str) -> None:
    with pytest.raises(ValueError, match="expected host:port"):
        split_host_port(value)


def test_the_soft_fd_limit_is_lifted_to_the_budget() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        raise_fd_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == fd_budget()
        assert default_max_connections() == max(64, min(10000, int(fd_budget() * 0.4)))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
