"""Poll for a condition with a deadline: never a fixed sleep to wait for something."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceeded(AssertionError):
    pass


def wait_for(
    predicate: Callable[[], T],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Call ``predicate`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the condition may raise until it holds
            last_exc = exc
        if time.monotonic() >= deadline:
            raise DeadlineExceeded(
                f"{what} not met within {timeout:.1f}s"
                + (f" (last error: {last_exc!r})" if last_exc else "")
            )
        time.sleep(interval)  # poll interval under a deadline


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
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            raise DeadlineExceeded(
                f"{what} not met within {timeout:.1f}s"
                + (f" (last error: {last_exc!r})" if last_exc else "")
            )
        await asyncio.sleep(interval)  # poll interval under a deadline
