"""Hostile input: a bounded fuzz of malformed packets over UDP and TCP never crashes or
stalls the listener; response-rate limiting caps what one network gets back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import pytest
import yaml

from federation.devstack.localfed import DEMO_HOST
from federation.manifest import Manifest
from federation.manifest_view import view_from_federation
from gateway.dns import DnsAnswers, DnsServer, Responder
from gateway.types import ViewHolder
from tests.dns.conftest import DnsFederation, addresses, ask, server
from tests.support.wait import wait_for

PACKETS = 3000
SEED = 1729


def _mutations(rng: random.Random, n: int) -> Iterator[bytes]:
    """Malformed or odd packets: random bytes, flipped bits, cut and padded queries,
    pointer loops, absurd counts, responses instead of queries."""
    valid = [
        dns.message.make_query(DEMO_HOST, t, use_edns=e).to_wire()
        for t in ("A", "AAAA", "NS", "SOA", "CNAME")
        for e in (None, 0)
    ]
    for i in range(n):
        base = bytearray(rng.choice(valid))
        kind = i % 8
        if kind == 0:
            pkt = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
        elif kind == 1:
            for _ in range(rng.randint(1, 6)):
                pos = rng.randrange(len(base))
                base[pos] ^= 1 << rng.randrange(8)
            pkt = bytes(base)
        elif kind == 2:
            pkt = bytes(base[: rng.randrange(len(base))])
        elif kind == 3:
            pkt = bytes(base) + bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 40)))
        elif kind == 4:  # a compression pointer to itself
            pkt = bytes(base[:12]) + b"\xc0\x0c\x00\x01\x00\x01"
        elif kind == 5:  # header counts far beyond the packet
            base[4:12] = bytes(rng.getrandbits(8) for _ in range(8))
            pkt = bytes(base)
        elif kind == 6:  # a response (QR set): never answered (no reflection loops)
            base[2] |= 0x80
            pkt = bytes(base)
        else:  # a label longer than 63 or a name longer than 255
            pkt = bytes(base[:12]) + b"\x7f" + b"a" * 127 + b"\x00\x00\x01\x00\x01"
        yield pkt


def test_fuzzed_packets_never_crash_or_stall(fed: DnsFederation) -> None:
    host, port = server(fed, "b")
    rng = random.Random(SEED)
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for i, pkt in enumerate(_mutations(rng, PACKETS)):
            with contextlib.suppress(BlockingIOError):
                sock.sendto(pkt, (host, port))
            if i % 200 == 0:  # drain answers now and then; and the listener still answers
                msg = ask((host, port), DEMO_HOST, "A", use_edns=0)
                assert addresses(msg)
    # TCP: garbage lengths, short reads, a valid query after garbage on a new connection
    for _ in range(50):
        with socket.create_connection((host, port), timeout=3) as conn:
            conn.sendall(rng.randbytes(rng.randint(1, 80)))
    assert addresses(ask((host, port), DEMO_HOST, "A", tcp=True))
    assert fed.gateways["b"].proc.running
    stats = fed.admin_get("b", "/v1/health/global")["dns"]["stats"]
    assert stats["malformed"] >= PACKETS // 4
    req = urllib.request.Request(  # /metrics needs the admin token (issue #13)
        fed.gateways["b"].admin_url + "/metrics",
        headers={"Authorization": f"Bearer {fed.admin_token}"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        metrics = r.read().decode()
    dropped = re.search(r'^fedgate_dns_dropped_total\{reason="malformed"\} (\S+)$', metrics, re.M)
    assert dropped and float(dropped.group(1)) >= stats["malformed"]
    assert 'fedgate_dns_responses_total{rcode="NOERROR"}' in metrics
    assert time.monotonic() - started < 60


_MANIFEST = f"""\
apiVersion: fedgate/v1
kind: Federation
metadata: {{name: rrl}}
clusters:
  - name: a
    region: r
    cloud: aws
    gateway: {{eastWest: "http://127.0.0.1:15443"}}
    publicEntry: {{addresses: [192.0.2.1]}}
services:
  - name: shop
    routes: [{{host: {DEMO_HOST}}}]
    port: 8080
    clusters: [a]
    endpoints: {{a: ["127.0.0.1:1"]}}
zones: [{{name: demo.local}}]
"""


def _holder() -> ViewHolder:
    return ViewHolder(view_from_federation(Manifest.from_yaml(_MANIFEST), now=time.time()))


@pytest.mark.asyncio
async def test_response_rate_limiting_drops_and_slips() -> None:
    holder = _holder()
    frozen = time.monotonic()  # no refill while the burst arrives, however slow the machine
    srv = DnsServer(
        holder,
        Responder(DnsAnswers()),
        responses_per_second=5,
        burst=10,
        slip=2,
        clock=lambda: frozen,
    )
    host, port = await srv.start("127.0.0.1:0")
    try:
        loop = asyncio.get_running_loop()
        got: list[dns.message.Message] = []

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                got.append(dns.message.from_wire(data))

        transport, _ = await loop.create_datagram_endpoint(
            Client, remote_addr=(host, port), family=socket.AF_INET
        )
        query = dns.message.make_query(DEMO_HOST, "A").to_wire()
        for _ in range(100):
            transport.sendto(query)
        await asyncio.to_thread(
            wait_for, lambda: srv.stats.udp >= 100, timeout=10, what="100 queries seen"
        )
        await asyncio.to_thread(
            wait_for, lambda: len(got) >= 55, timeout=10, what="the answers and slips back"
        )
        answered = [m for m in got if m.answer]
        slipped = [m for m in got if m.flags & dns.flags.TC and not m.answer]
        assert len(answered) == 10  # the burst
        assert srv.stats.rate_limited == 45 and srv.stats.slipped == 45
        assert len(slipped) >= 1
        # TCP is never limited: the truncated client gets its answer there
        msg = await asyncio.to_thread(
            dns.query.tcp, dns.message.make_query(DEMO_HOST, "A"), host, port=port, timeout=3
        )
        assert [rd.to_text() for rr in msg.answer for rd in rr] == ["192.0.2.1"]
        transport.close()
    finally:
        await srv.close()


def _serve(tmp_path: Path, listen_dns: object) -> subprocess.CompletedProcess[str]:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(_MANIFEST)
    settings = {
        "cluster": "a",
        "manifest": str(manifest),
        "listen": {"public": "127.0.0.1:0", "eastWest": None, "admin": "127.0.0.1:0"},
    }
    settings["listen"]["dns"] = listen_dns  # type: ignore[index]
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(settings))
    return subprocess.run(
        [sys.executable, "-m", "federation.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FEDGATE_ADMIN_TOKEN": "t" * 32},
    )


def test_a_busy_or_bad_dns_address_is_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        out = _serve(tmp_path, f"127.0.0.1:{port}")
    assert out.returncode == 2 and "cannot bind a listener" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = _serve(tmp_path, "nowhere")
    assert out.returncode == 2 and "listen.dns" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 on this machine")
async def test_an_ipv6_listener_answers_over_udp_and_tcp() -> None:
    srv = DnsServer(_holder(), Responder(DnsAnswers()))
    try:
        host, port = await srv.start("[::1]:0")
    except OSError as exc:
        pytest.skip(f"::1 is not usable here: {exc}")
    try:
        query = dns.message.make_query(DEMO_HOST, "A", use_edns=0)
        for send in (dns.query.udp, dns.query.tcp):
            msg = await asyncio.to_thread(send, query, "::1", port=port, timeout=3)
            assert [rd.to_text() for rr in msg.answer for rd in rr] == ["192.0.2.1"]
        assert host == "::1"
    finally:
        await srv.close()
