"""Smoke test of ``python -m bench book``: it runs and reports every key (no timing asserts).

Peers may be "not installed" (they are an optional extra)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_bench_book_quick_json() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "book", "--quick", "--json", "--ops", "5000"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert isinstance(r["pubex_ops_per_s"], int) and r["pubex_ops_per_s"] > 0
    assert r["p99_us"] > 0
    assert r["target"] == 2.0
    assert set(r["peers"]) == {"cython-orderbook", "akhil4n-orderbook", "fastlob"}
    for value in r["peers"].values():
        assert (isinstance(value, int) and value > 0) or isinstance(value, str)
    assert "fastest_peer" in r and "ratio_to_fastest_peer" in r
