"""The report files and the Locust clients read and write JSON with orjson and never
load trio: they run beside the server (Locust under gevent) or after it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = (
    "bench.report",
    "bench.stats",
    "bench.locust.summary",
    "bench.locust.run",
    "bench.locust.users",
)


def test_report_and_locust_modules_use_orjson_not_trio() -> None:
    code = (
        "import importlib, sys\n"
        f"for m in {MODULES!r}: importlib.import_module(m)\n"
        "print('trio' in sys.modules, 'orjson' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]
