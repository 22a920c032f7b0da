"""Poll for a condition with a deadline: never a fixed sleep to wait for something."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from federation.devstack.poll import DeadlineExceeded, ProcessExited, wait_for

__all__ = ["DeadlineExceeded", "ProcessExited", "async_wait_for", "wait_for"]

T = TypeVar("T")


async def async_wait_for(
    predicate: Callable[[], Awaitable[T]] | Callable[[], T],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """The asyncio twin of :func:`wait_for`; ``predicate`` may be sync or async."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
                value = await value
            if value:
                return value  # type: ignore[return-value]
        except ProcessExited:
            raise
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            raise DeadlineExceeded(
                f"{what} not met within {timeout:.1f}s"
                + (f" (last error: {last_exc!r})" if last_exc else "")
            )
        await asyncio.sleep(interval)  # poll interval under a deadline
