"""The snapshot writer process: its own copy of the routing facts, written to disk.

Started by :class:`federation.snapshot_writer.SnapshotWriter` as ``python -m
federation.snapshot_child PATH MIN_INTERVAL``, it encodes nothing and shares no lock
with the gateway: it keeps the blocks of lines the gateway sends (one block per item,
:mod:`federation.snapshot_delta`), assembles the file (:mod:`federation.snapshot_file`:
digest, then a temporary file, ``fsync``, rename) and writes it.

Orders on stdin, each a frame (4-byte big-endian length, then a pickle of a tuple; the
gateway is the only writer of that pipe):

- ``("put", [(tag, key, block or None), ...])``: blocks replaced or removed; the copy
  is not whole until the next commit;
- ``("commit", seq, facts)``: the copy is one whole view (``facts``: its revision,
  config revision and federation name);
- ``("flush", seq)``: write now what is committed and not yet written, answer ``F seq``.

End of stdin (the gateway closed it, or died): write what is committed and not yet
written, then exit. Interrupt and terminate signals are ignored: the end of stdin is
the one way to stop it (a Ctrl-C or a group-wide ``SIGTERM`` reaches the gateway too,
which then sends its last state before closing the pipe).

Answers on stdout, one line each: ``W seq bytes`` after a write, ``E error`` when a
write failed (tried again after ``MIN_INTERVAL``), ``F seq``.

Writes are coalesced: only a committed copy, at most one per ``MIN_INTERVAL`` seconds
(the first at once).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import struct
import sys
import time
from typing import Any

from federation.snapshot_file import TAGS, assemble, write_atomic

FRAME = struct.Struct(">I")  # an order: its length, then its pickle


class Copy:
    """The routing facts as the gateway last committed them, and when to write them."""

    def __init__(self, path: str, min_interval: float) -> None:
        self.path = path
        self.min_interval = min_interval
        self.blocks: dict[str, dict[Any, bytes]] = {tag: {} for tag in TAGS}
        self.facts: dict[str, Any] = {}
        self.whole = False  # the blocks are one committed view
        self.dirty = False  # ... that is not on disk yet
        self.seq = 0  # the last commit
        self.last_write = -1e9
        self.due: float | None = None  # when to write (monotonic)

    def order(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "put":
            for tag, key, block in message[1]:
                if block is None:
                    self.blocks[tag].pop(key, None)
                else:
                    self.blocks[tag][key] = block
            self.whole = False
        elif kind == "commit":
            _, self.seq, self.facts = message
            self.whole = self.dirty = True
            if self.due is None:
                self.due = max(time.monotonic(), self.last_write + self.min_interval)
        elif kind == "flush":
            self.write()
            answer(f"F {message[1]}")

    def write(self) -> None:
        """Write the committed copy now, if it is not on disk yet."""
        self.due = None
        if not (self.whole and self.dirty):
            return
        self.last_write = time.monotonic()
        facts = dict(self.facts, written_at=time.time())
        data = assemble(
            facts, (block for tag in TAGS for _, block in sorted(self.blocks[tag].items()))
        )
        try:
            write_atomic(self.path, data)
        except OSError as exc:
            self.due = self.last_write + self.min_interval
            answer(f"E {' '.join(str(exc).split())}")
            return
        self.dirty = False
        answer(f"W {self.seq} {len(data)}")


def answer(text: str) -> None:
    with contextlib.suppress(OSError):  # the gateway is gone: the file is what counts
        os.write(1, text.encode() + b"\n")


def frames(buffer: bytearray) -> list[tuple[Any, ...]]:
    """The whole frames at the head of ``buffer`` (taken out of it)."""
    out, at = [], 0
    while len(buffer) - at >= FRAME.size:
        (size,) = FRAME.unpack_from(buffer, at)
        end = at + FRAME.size + size
        if len(buffer) < end:
            break
        out.append(pickle.loads(memoryview(buffer)[at + FRAME.size : end]))
        at = end
    del buffer[:at]
    return out


def run(path: str, min_interval: float) -> int:
    copy = Copy(path, min_interval)
    buffer = bytearray()
    while True:
        timeout = None if copy.due is None else max(0.0, copy.due - time.monotonic())
        readable, _, _ = select.select([0], [], [], timeout)
        if readable:
            chunk = os.read(0, 1 << 20)
            if not chunk:
                copy.write()
                return 0
            buffer += chunk
            for message in frames(buffer):
                copy.order(message)
        if copy.due is not None and time.monotonic() >= copy.due:
            copy.write()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(10)  # the gateway's loop comes first on a shared core
    path, min_interval = argv[0], float(argv[1])
    return run(path, min_interval)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
