"""Smoke test of ``python -m bench core``: it runs and reports every key (no timing asserts)."""

from __future__ import annotations

import subprocess
import sys

from tests.bench.suite import REPO_ROOT, assert_positive_figures, run_suite

NUMERIC_KEYS = (
    "engine_bids_per_s",
    "engine_cpu_us_per_bid",
    "durable_bids_per_s",
    "raw_lmdb_entries_per_s",
    "durable_to_raw_ratio",
    "ack_p50_us",
    "ack_p99_us",
    "ack_p999_us",
    "closed_loop_ack_p50_us",
    "closed_loop_ack_p99_us",
    "mean_batch_entries",
    "batches",
)


def test_bench_core_quick_json() -> None:
    result = run_suite("core", timeout=120)
    assert_positive_figures(result, NUMERIC_KEYS)
    assert result["targets"] == {
        "engine_bids_per_s": 300000,
        "durable_to_raw_ratio": 0.5,
        "ack_p99_us": 2000,
    }
    # Every bid was valid and acknowledged: the workload, not the speed, is checked.
    assert result["engine_rejected"] == 0
    assert result["durable_rejected"] == 0
    assert result["open_loop_rejected"] == 0
    assert result["open_loop_missing_acks"] == 0


def test_bench_lists_suites() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0
    for suite in ("core", "gateway", "book"):
        assert suite in proc.stdout
