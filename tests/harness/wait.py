"""Bounded polling: the only way tests wait for something."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: generous: the test machine is a loaded 2-core box. MINIMIX_TEST_TIMEOUT scales it.
DEFAULT_TIMEOUT = float(os.environ.get("MINIMIX_TEST_TIMEOUT", "20"))
_UNSET = object()


def wait_until(
    predicate: Callable[[], T],
    timeout: float | None = None,
    interval: float = 0.02,
    message: str | Callable[[], str] = "condition not met",
) -> T:
    """Call `predicate` until it returns a truthy value and return that value.

    Raises AssertionError(message + the last value or exception) after `timeout` seconds.
    An exception raised by the predicate counts as "not yet" (AssertionError included, so
    a predicate may be a block of asserts).
    """
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + timeout
    last: object = _UNSET
    while True:
        try:
            last = predicate()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - reported below if it persists
            last = e
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            shown = "never evaluated" if last is _UNSET else repr(last)
            raise AssertionError(f"{text} (after {timeout:g} s; last value: {shown})")
        time.sleep(interval)
