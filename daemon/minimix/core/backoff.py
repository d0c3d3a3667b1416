"""Exponential backoff with jitter, as a pure function."""

from __future__ import annotations

import random


def nominal_delay(attempt: int, *, base: float, cap: float, factor: float = 2.0) -> float:
    """``base * factor**(attempt-1)``, capped at ``cap``; ``attempt`` is 1-based."""
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    return min(cap, base * factor ** min(attempt - 1, 64))


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    jitter: float,
    rng: random.Random,
    factor: float = 2.0,
) -> float:
    """Delay before retry number ``attempt`` (1-based).

    Jitter only ever lengthens the nominal delay, by up to ``jitter`` (a fraction),
    so retries of many rooms spread out and no retry ever comes earlier than the
    documented delay: once the cap is reached, never more often than every ``cap``
    seconds.
    """
    return nominal_delay(attempt, base=base, cap=cap, factor=factor) * (1.0 + jitter * rng.random())
