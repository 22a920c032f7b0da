"""Poll for a condition with a deadline (never a fixed sleep), and stop a child process."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceeded(AssertionError):
    """The condition did not hold before the deadline."""


class ProcessExited(RuntimeError):
    """The process waited for has exited: the condition never will hold (:func:`wait_for`
    raises it at once instead of polling on to the deadline)."""


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
        except ProcessExited:
            raise
        except Exception as exc:  # the condition may raise until it holds
            last_exc = exc
        if time.monotonic() >= deadline:
            suffix = f" (last error: {last_exc!r})" if last_exc else ""
            raise DeadlineExceeded(f"{what} not met within {timeout:.1f}s{suffix}")
        time.sleep(interval)  # poll interval under a deadline


def stop_process(
    proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None, timeout: float = 10.0
) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL: every process a test or demo started."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
