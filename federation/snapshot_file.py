"""The snapshot file's bytes and its atomic write (``fedgate-view/2``).

Shared by the gateway (:mod:`federation.snapshot`: encoding and reading a view) and the
writer process (:mod:`federation.snapshot_child`), which imports nothing but this
module and the standard library: it starts fast and small.

A file is a header line ``{"format", "sha256"}``, a line of facts (revision, config
revision, federation name, when written), then one line per item (``["service",
{...}]``: the codec's plain form). The digest covers every line after the header.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FORMAT = "fedgate-view/2"

# the parts of a view, one item per line, in the file's order
TAGS = ("cluster", "service", "endpoint", "gateway", "observation", "health", "rejected", "zone")


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def assemble(facts: dict[str, Any], blocks: Iterable[bytes]) -> bytes:
    """A whole file: the header (format, SHA-256 of the rest), the facts, then the
    items' lines (``blocks``: each one line or several, joined by newlines)."""
    body = b"\n".join([dumps(facts), *blocks, b""])
    head = dumps({"format": FORMAT, "sha256": hashlib.sha256(body).hexdigest()})
    return head + b"\n" + body


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder,
    ``fsync``, ``os.replace`` over the target, ``fsync`` of the folder. A reader sees
    the old file or the new one, never half of one, even after a crash."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
