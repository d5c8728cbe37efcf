"""Deadline-bounded polls for tests that drive real processes.

A child process has no trio clock to mock and no event to await, so its tests
look at it (a log line, a URL, a counter) until what they wait for is true, and
fail with ``what`` -- never assert after a bare sleep. In-process trio tests
use ``tests.gateway.conftest.wait_for``, trio's ``MockClock`` or
``tests.vclock.CommitAwareClock`` instead."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    check: Callable[[], T | None],
    timeout_s: float,
    what: str,
    *,
    poll_s: float = 0.05,
    why: Callable[[], str] | None = None,
) -> T:
    """``check()``'s first truthy value, polled every ``poll_s`` for at most
    ``timeout_s``. An ``OSError`` (a port not yet listening, a file not yet
    written) counts as not yet. On timeout: ``AssertionError`` naming ``what``,
    with ``why()`` (for instance the child's log) when given."""
    deadline = time.monotonic() + timeout_s
    last: OSError | None = None
    while True:
        try:
            got = check()
            if got:
                return got
        except OSError as e:
            last = e
        if time.monotonic() >= deadline:
            detail = why() if why is not None else repr(last) if last else ""
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{detail}")
        time.sleep(poll_s)
