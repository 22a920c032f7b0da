"""Loopback ports for the processes a test, the demo or a bench starts.

A port is chosen here and bound seconds later by another process (etcd, a gateway, a
backend), so what matters is who can take it in between. The allocator closes each way:

- it hands out ports below the kernel's ephemeral range, which the kernel never gives
  to anyone by itself (``bind(…, 0)``, a ``connect()`` or a UDP ``sendto()`` from an
  unbound socket all draw from that range);
- it never hands out the same port twice in one process (a sequential cursor), so two
  listeners of one federation, or a module's federation and the previous one's, never
  share a port;
- it walks blocks of ports that it holds by an exclusive ``flock`` for the life of the
  process, so two test sessions (or a test and a demo) running at once never walk the
  same ports;
- it skips a port that anything holds now, over TCP *or* UDP (a DNS listener binds both),
  checked without ``SO_REUSEADDR`` so a port still in TIME_WAIT is skipped too.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
import threading
from pathlib import Path

BLOCK = 256  # ports per claimed block
SPAN = 16_384  # ports below the ephemeral range the allocator may use
_LOWEST = 1024  # never a privileged port
_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC


def ephemeral_range(path: Path = _EPHEMERAL) -> tuple[int, int]:
    """The kernel's ephemeral port range, inclusive (Linux's default when unreadable)."""
    try:
        low, high = (int(v) for v in path.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def allocation_span(ephemeral: tuple[int, int] | None = None) -> range:
    """The ports below the ephemeral range (above it when there is no room below)."""
    low, high = ephemeral or ephemeral_range()
    if low - _LOWEST >= 4 * BLOCK:
        return range(max(_LOWEST, low - SPAN), low)
    if 65535 - high >= 4 * BLOCK:
        return range(high + 1, min(65536, high + 1 + SPAN))
    return range(_LOWEST, 65536)  # no room outside: the checks below still hold


def bindable(host: str, port: int) -> bool:
    """Nothing holds ``host:port`` over TCP (listening, connected or in TIME_WAIT) nor
    over UDP, on ``host`` itself or on the wildcard address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(family, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


class PortAllocator:
    """Hands out the ports of ``span`` block by claimed block, each once (a port again
    only when every block is claimed and its own were all walked)."""

    def __init__(self, span: range | None = None, lock_dir: Path | None = None) -> None:
        self.span = span if span is not None else allocation_span()
        self.lock_dir = lock_dir or Path(tempfile.gettempdir()) / f"fedgate-ports-{os.getuid()}"
        self._mutex = threading.Lock()
        self._held: list[tuple[int, int]] = []  # (first port of a block, its lock fd or -1)
        self._cursor = 0  # the block of _held being walked
        self._next = 0  # the next port of that block
        self._tried = 0  # blocks of the span tried for a claim (each once)

    def take(self, host: str = "127.0.0.1") -> int:
        """A port nothing holds on ``host`` now, never handed out before by this allocator."""
        with self._mutex:
            for _ in range(len(self.span)):
                port = self._advance()
                if bindable(host, port):
                    return port
        raise OSError(f"no free port on {host} in {self.span.start}-{self.span.stop - 1}")

    def close(self) -> None:
        """Release every claimed block (for an allocator made by a test)."""
        with self._mutex:
            for _, fd in self._held:
                if fd >= 0:
                    os.close(fd)
            self._held.clear()

    # ------------------------------------------------------------------ blocks
    def _advance(self) -> int:
        """The next port to try: on through the block, then a newly claimed one, else
        (every block of the span claimed) the own block walked longest ago."""
        while True:
            if self._held:
                start = self._held[self._cursor][0]
                if self._next < min(start + BLOCK, self.span.stop):
                    self._next += 1
                    return self._next - 1
            if self._claim():
                self._cursor = len(self._held) - 1
            elif self._held:
                self._cursor = (self._cursor + 1) % len(self._held)
            else:  # every block is another process's: walk one anyway (bind-checked)
                blocks = max(1, len(self.span) // BLOCK)
                self._held.append((self.span.start + os.getpid() % blocks * BLOCK, -1))
                self._cursor = 0
            self._next = self._held[self._cursor][0]

    def _claim(self) -> bool:
        """Lock the next block of the span no other process holds; False when none is."""
        blocks = max(1, len(self.span) // BLOCK)
        try:
            self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            return False
        while self._tried < blocks:
            start = self.span.start + self._tried * BLOCK
            self._tried += 1
            try:
                fd = os.open(self.lock_dir / f"{start}.lock", _LOCK_FLAGS, 0o600)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self._held.append((start, fd))
            return True
        return False


_allocator = PortAllocator()


def _own_allocator_in_child() -> None:
    """A forked child gets its own cursor and blocks (the parent's locks stay the parent's)."""
    global _allocator
    for _, fd in _allocator._held:
        if fd >= 0:
            os.close(fd)  # the parent's descriptor keeps the lock
    _allocator = PortAllocator(_allocator.span, _allocator.lock_dir)


os.register_at_fork(after_in_child=_own_allocator_in_child)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` over TCP and UDP, that no other caller in this process nor
    any process of this machine using this module is handed (see the module's notes)."""
    return _allocator.take(host)


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports, each as :func:`free_port`."""
    return [_allocator.take(host) for _ in range(n)]


__all__ = ["PortAllocator", "allocation_span", "bindable", "free_port", "free_ports"]
