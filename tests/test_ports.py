"""Ports for the processes the tests start: chosen so nothing else can take them between
the choice and the bind, and a process that exits at start (a port taken) fails at once.

Before: ``free_port`` bound port 0 and released it, so it drew from the kernel's ephemeral
range (the one ``connect()``, UDP ``sendto()`` and every ``bind(…, 0)`` draw from) at
random, checked TCP only, and handed out the same port twice in one session about once
per 7,000 draws per pair: a DNS federation's gateway exited with "cannot bind a listener:
Address already in use"; an etcd that exited so was reported healthy (``EtcdUnavailable``
in the next step)."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.devstack.ports import (
    BLOCK,
    PortAllocator,
    allocation_span,
    bindable,
    ephemeral_range,
    free_port,
)
from gateway.dns import DnsAnswers, DnsServer, Responder
from tests.dns.test_hostile import _holder
from tests.support.etcd import EtcdCluster
from tests.support.gateway_proc import GatewayProcess, manifest_yaml
from tests.support.wait import ProcessExited

HOST = "127.0.0.97"  # an address no other test binds
# the allocators made here walk the span's last two blocks, the ones the process-wide
# allocator of a session reaches last
SPAN = range(allocation_span().stop - 2 * BLOCK, allocation_span().stop)
_SERVICE = {
    "name": "s",
    "routes": [{"host": "s.test"}],
    "port": 80,
    "clusters": ["c1"],
    "endpoints": {"c1": ["127.0.0.1:9"]},
}


@pytest.fixture
def allocator(tmp_path: Path) -> Iterator[PortAllocator]:
    """An allocator of its own (its own lock folder: it walks the first block of SPAN)."""
    a = PortAllocator(SPAN, tmp_path)
    yield a
    a.close()


def test_free_ports_are_never_the_kernels_nor_repeated() -> None:
    low, high = ephemeral_range()
    ports = [free_port() for _ in range(300)]
    assert not [p for p in ports if low <= p <= high]  # before: all 300 were
    assert len(set(ports)) == len(ports)  # before: 300 draws repeated one with p > 0.99


def test_a_port_held_over_udp_or_tcp_is_skipped(allocator: PortAllocator) -> None:
    first = allocator.take(HOST)
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as wildcard,
    ):
        udp.bind((HOST, first + 1))  # a DNS listener's UDP twin
        tcp.bind((HOST, first + 2))  # bound, not even listening
        wildcard.bind(("0.0.0.0", first + 3))  # an unbound sender's port, on every address
        assert not bindable(HOST, first + 1)
        nxt = allocator.take(HOST)
    assert nxt > first + 3, (first, nxt)


def test_two_processes_walk_distinct_blocks(allocator: PortAllocator, tmp_path: Path) -> None:
    mine = [allocator.take(HOST) for _ in range(5)]
    code = (
        "import sys; from pathlib import Path; from federation.devstack.ports import PortAllocator;"
        "a = PortAllocator(range(int(sys.argv[3]), int(sys.argv[4])), Path(sys.argv[1]));"
        "print(a.take(sys.argv[2]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), HOST, str(SPAN.start), str(SPAN.stop)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    theirs = int(out.stdout)
    start = SPAN.start
    assert all(start <= p < start + BLOCK for p in mine)
    assert start + BLOCK <= theirs < start + 2 * BLOCK  # the next block: the first is held
    allocator.close()  # released: the next allocator walks the first block again
    again = PortAllocator(SPAN, tmp_path)
    try:
        assert start <= again.take(HOST) < start + BLOCK
    finally:
        again.close()


def test_with_every_block_claimed_the_oldest_ports_come_back(tmp_path: Path) -> None:
    one, two = PortAllocator(SPAN, tmp_path), PortAllocator(SPAN, tmp_path)
    try:
        first = [one.take(HOST) for _ in range(BLOCK)]
        assert len(set(first)) == BLOCK and max(first) < SPAN.start + BLOCK
        assert two.take(HOST) >= SPAN.start + BLOCK  # the other block
        assert one.take(HOST) == first[0]  # no block left: its own, oldest first
    finally:
        one.close()
        two.close()


def test_an_etcd_whose_port_is_taken_fails_at_once_with_its_log(tmp_path: Path) -> None:
    etcd = EtcdCluster(base_dir=tmp_path / "etcd")
    m = etcd.members[0]
    started = time.monotonic()
    try:
        with socket.socket() as busy:
            busy.bind((m.host, m.client_port))
            busy.listen()
            # before: the member exited, none was left running and "all running members
            # are healthy" held: start() returned and the first request failed
            with pytest.raises(ProcessExited, match="address already in use"):
                etcd.start(timeout=30)
    finally:
        etcd.close()
    assert time.monotonic() - started < 20


def test_a_gateway_that_cannot_bind_fails_at_once() -> None:
    port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        gw = GatewayProcess(
            settings={
                "cluster": "c1",
                "insecureEastWest": True,
                "listen": {"public": f"127.0.0.1:{port}"},
            },
            manifest=manifest_yaml(services=[_SERVICE]),
            ready_timeout=60,
        )
        started = time.monotonic()
        # before: the predicate's "gateway exited" was taken for "not ready yet" and the
        # wait ran to its deadline (here 60 s) before a DeadlineExceeded
        # and the one line names the listener that could not bind
        with pytest.raises(ProcessExited, match=rf"cannot bind a listener \(127.0.0.1:{port}\): "):
            gw.start()
    assert time.monotonic() - started < 30


async def test_a_busy_dns_port_names_its_address_and_transport() -> None:
    port = free_port(HOST)
    for kind, where in (
        (socket.SOCK_DGRAM, f"{HOST}:{port} udp"),
        (socket.SOCK_STREAM, f"{HOST}:{port} tcp"),
    ):
        srv = DnsServer(_holder(), Responder(DnsAnswers()))
        with socket.socket(socket.AF_INET, kind) as busy:
            busy.bind((HOST, port))
            with pytest.raises(OSError) as caught:
                await srv.start(f"{HOST}:{port}")
        assert caught.value.filename == where and caught.value.errno == errno.EADDRINUSE
