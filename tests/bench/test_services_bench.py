"""Smoke test of ``python -m bench services``: it runs at tiny sizes and reports every key
the benchmark report reads (no timing asserts)."""

from __future__ import annotations

import pytest

from tests.bench.suite import assert_positive_figures, run_suite

pytestmark = pytest.mark.timeout(180)

PER_FOLLOWER = (
    "entries_per_s",
    "to_raw_scan",
    "cpu_us_per_entry",
    "live_lag_p50_ms",
    "live_lag_p99_ms",
    "live_lag_samples",
)


def test_bench_services_quick_json() -> None:
    result = run_suite("services", "--live-s", "1", timeout=170)
    assert_positive_figures(
        result,
        (
            "follower_entries_per_s",
            "raw_scan_entries_per_s",
            "raw_scan_body_only_entries_per_s",
            "live_lag_p99_ms",
            "live_rate_per_s",
            "live_max_acks_per_s",
        ),
    )
    assert result["targets"] == {"follower_to_raw_scan": 0.5, "live_lag_p99_ms": 50.0}
    assert result["entries"] == 20_000 and result["ledger"]["entries"] == 20_000
    followers = result["followers"]
    assert {"supervision", "disclosure"} <= set(followers) | set(result.get("skipped", {}))
    for name in followers:
        assert_positive_figures(result[name] | {"machine": result["machine"]}, PER_FOLLOWER)
        assert result[name]["entries"] == 20_000  # each caught up with the whole ledger
    assert result["slowest_follower"] in followers
    assert result["follower_entries_per_s"] == min(result[n]["entries_per_s"] for n in followers)
    # The live workload, not its speed: every bid acknowledged as accepted.
    assert result["live_bad"] == 0 and result["live_missing_acks"] == 0
