"""The project's retry pause: jittered exponential backoff (Vault, ACME, the snapshot writer)."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, *, initial: float, maximum: float, rng: random.Random) -> float:
    """Jittered exponential backoff: ``initial * 2**attempt`` capped, times U(0.5, 1)."""
    base = min(maximum, initial * (2.0 ** min(attempt, 30)))
    return base * rng.uniform(0.5, 1.0)
