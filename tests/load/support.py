"""Load-test helpers.

Never import locust in the test process (not even through
``pytest.importorskip``): locust monkey-patches the standard library with gevent
on import, which removes ``select.epoll`` -- every later trio test in the same
xdist worker then fails (it did: T1 in CI).  The runs go through a subprocess;
here we only ask whether the package is installed.
"""

from __future__ import annotations

import importlib.util

import pytest


def require_locust() -> None:
    if importlib.util.find_spec("locust") is None:
        pytest.skip("locust is not installed (the test extra installs it)")
