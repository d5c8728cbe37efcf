"""Smoke test of ``python -m bench gateway``: it runs and reports every key (no timing asserts)."""

from __future__ import annotations

from tests.bench.suite import assert_positive_figures, run_suite

NUMERIC_KEYS = (
    "acks_per_s",
    "raw_echo_per_s",
    "raw_echo_verify_per_s",
    "acks_to_raw_verify_ratio",
    "raw_verify_to_raw_ratio",
    "ack_p50_us",
    "ack_p99_us",
    "open_loop_rate_per_s",
    "watcher_lag_p50_ms",
    "watcher_lag_p99_ms",
    "watchers",
    "server_cpu_us_per_msg_pubex",
    "client_cpu_us_per_msg_pubex",
)


def test_bench_gateway_quick_json() -> None:
    result = run_suite("gateway", timeout=240)
    assert_positive_figures(result, NUMERIC_KEYS)
    assert result["targets"] == {
        "acks_to_raw_verify_ratio": 0.85,
        "ack_p99_us": 10000,
        "watcher_lag_p99_ms": 200,
    }
    # Every bid was a valid rising bid and every echo verified: the workload, not the
    # speed, is checked.
    assert result["closed_loop_bad"] == 0
    assert result["open_loop_bad"] == 0
    assert result["open_loop_missing_acks"] == 0
    assert result["raw_echo_verify_bad"] == 0
    assert result["watch_bids_acked"] > 0
