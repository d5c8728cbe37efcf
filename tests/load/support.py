"""Load-test helpers.

Never import locust in the test process (not even through
``pytest.importorskip``): locust monkey-patches the standard library with gevent
on import, which removes ``select.epoll`` -- every later trio test in the same
xdist worker then fails (it did: T1 in CI).  The runs go through a subprocess;
here we only ask whether the package is installed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def require_locust() -> None:
    if importlib.util.find_spec("locust") is None:
        pytest.skip("locust is not installed (the test extra installs it)")


def run_short(
    scenario: str, users: int, duration_s: int, reports: Path, suffixes: tuple[str, ...]
) -> tuple[Path, str]:
    """One short ``bench.locust.run`` of ``scenario`` (no latency bound); asserts it
    exited 0 and that every report file ``<base><suffix>`` was written.  Returns
    the server report's path and the reports' common base."""
    require_locust()
    argv = [sys.executable, "-m", "bench.locust.run", "--scenario", scenario]
    argv += ["--users", str(users), "--duration", str(duration_s)]
    argv += ["--reports", str(reports), "--no-latency-bounds"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    (server_json,) = reports.glob(f"{scenario}-*-server.json")
    base = str(server_json).removesuffix("-server.json")
    for suffix in suffixes:
        assert Path(base + suffix).stat().st_size > 0, suffix
    return server_json, base
