"""Suite-wide guard: no test may leave the process monkey-patched.

locust (and gevent) patch the standard library on import; ``select.epoll``
disappears and every later trio test in the same xdist worker fails far from
the cause.  This names the test that did it instead.
"""

from __future__ import annotations

import select

import pytest


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    if not hasattr(select, "epoll"):
        pytest.fail(f"{item.nodeid} left the process monkey-patched (select.epoll is gone)")
