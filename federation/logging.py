"""structlog configuration: JSON lines in production, a readable console on a terminal.

``configure_logging(format, level)`` is called once by the composition root. Event logs
(structlog and the standard library's ``logging``, e.g. uvicorn's) go to stderr; the
gateway's access log (``gateway.telemetry``) goes to stdout in the same JSON shape
(``timestamp``, ``level``, ``event`` first), so one log pipeline reads both.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def resolve_format(fmt: str, stream: TextIO | None = None) -> str:
    """``auto`` means console on a terminal, JSON otherwise."""
    if fmt not in ("json", "console", "auto"):
        raise ValueError(f"log format must be json, console or auto, got {fmt!r}")
    if fmt != "auto":
        return fmt
    stream = stream if stream is not None else sys.stderr
    try:
        return "console" if stream.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def resolve_level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    try:
        return LEVELS[level.lower()]
    except KeyError:
        raise ValueError(
            f"log level must be one of {', '.join(sorted(LEVELS))}, got {level!r}"
        ) from None


def configure_logging(
    format: str = "auto", level: str | int = "info", *, stream: TextIO | None = None
) -> str:
    """Configure structlog and the standard library's logging; returns the format used."""
    out = stream if stream is not None else sys.stderr
    fmt = resolve_format(format, out)
    lvl = resolve_level(level)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        shared_tail: list[Any] = [
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
        ]
    else:
        colors = _colors(out)
        renderer = structlog.dev.ConsoleRenderer(colors=colors)
        shared_tail = [structlog.processors.StackInfoRenderer()]

    structlog.configure(
        processors=[*shared, *shared_tail, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )

    # the standard library (uvicorn, asyncio, libraries) renders through the same chain
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(lvl)
    return fmt


def _colors(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
