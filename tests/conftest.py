"""Fixtures shared by every test folder: real etcd servers on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.etcd import EtcdCluster


@pytest.fixture
def etcd() -> Iterator[EtcdCluster]:
    """A fresh single-member etcd for one test."""
    with EtcdCluster(size=1) as cluster:
        yield cluster


@pytest.fixture
def etcd3() -> Iterator[EtcdCluster]:
    """A fresh 3-member etcd cluster for one test."""
    with EtcdCluster(size=3) as cluster:
        yield cluster
