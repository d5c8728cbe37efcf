"""Running a benchmark suite the way a person would, for the smoke tests."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_suite(name: str, *args: str, timeout: float = 240) -> dict[str, Any]:
    """``python -m bench NAME --quick --json ARGS``: exits 0 and prints one JSON object."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench", name, "--quick", "--json", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def assert_positive_figures(result: dict[str, Any], keys: Iterable[str]) -> None:
    for key in keys:
        value = result[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        assert math.isfinite(value) and value > 0, (key, value)
    machine = result["machine"]
    assert machine["platform"] and machine["cpu_count"] and machine["python"]
