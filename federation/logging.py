"""Event logs: one helper, one chain, one rendering (JSON lines in production, a readable
console on a terminal).

Every module of ``gateway/`` and ``federation/`` logs the same way::

    from federation.logging import get_logger

    log = get_logger("fedgate.watch")
    log.warning("watch.interrupted", error=str(exc), failures=n)

an event name (``area.what``, lower case) and key/value fields, never a formatted
sentence (``tests/test_event_logs.py`` checks every call site). The helper wraps a
standard-library logger, so events travel the standard library's way (levels, handlers,
pytest's ``caplog``) and need no global structlog state: before ``configure_logging``
warnings reach stderr through the standard library's last-resort handler.

``configure_logging(format, level)`` is called once by the composition root: one
handler on the root logger renders both the events and foreign records (uvicorn,
asyncio, libraries) with the same processors, to stderr; the gateway's access log
(``gateway.telemetry``) goes to stdout in the same JSON shape (``timestamp``, ``level``,
``event`` first), so one log pipeline reads both.
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


# what every event goes through before the standard library takes it (cheap: a disabled
# level stops at the first processor)
_CHAIN: list[Any] = [
    structlog.stdlib.filter_by_level,
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
    structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
]


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """The event logger of one module (see the module docstring)."""
    logger: structlog.stdlib.BoundLogger = structlog.wrap_logger(
        logging.getLogger(name),
        processors=_CHAIN,
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return logger


_HEAD = ("timestamp", "level", "event")


def _head_first(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """``timestamp``, ``level``, ``event`` first (the access log's shape), then the fields."""
    head: dict[str, Any] = {k: event.pop(k) for k in _HEAD if k in event}
    head.update(event)
    return head


def configure_logging(
    format: str = "auto", level: str | int = "info", *, stream: TextIO | None = None
) -> str:
    """Render events and foreign records alike on ``stream`` (default stderr); returns
    the format used."""
    out = stream if stream is not None else sys.stderr
    fmt = resolve_format(format, out)
    lvl = resolve_level(level)
    renderer: Any
    tail: list[Any]
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        tail = [structlog.processors.format_exc_info, _head_first]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_colors(out))
        tail = []
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            # foreign records (uvicorn's, asyncio's) get what _CHAIN gives an event
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *tail,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(lvl)
    for name in _FOREIGN:  # configured earlier (uvicorn's default config): back to the root
        foreign = logging.getLogger(name)
        for h in list(foreign.handlers):
            foreign.removeHandler(h)
        foreign.propagate = True
    return fmt


# loggers whose libraries may have given them handlers of their own that stop
# propagation (uvicorn's default logging config does): rendered by the root's handler
_FOREIGN = ("uvicorn", "uvicorn.error", "uvicorn.access")


def _colors(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
