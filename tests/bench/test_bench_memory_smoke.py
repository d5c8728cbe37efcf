"""Smoke test of ``python -m bench memory``: it runs and reports every key (no memory asserts)."""

from __future__ import annotations

from tests.bench.suite import run_suite


def test_bench_memory_quick_json() -> None:
    result = run_suite("memory", timeout=120)
    for key in (
        "edge_bytes_per_conn",
        "edge_rss_anon_bytes_per_conn",
        "sequencer_bytes_per_conn",
        "sequencer_rss_bytes",
        "sequencer_bytes_per_lot",
        "sequencer_rss_at_100k_lots_bytes",
        "latest_snapshot_bytes",
    ):
        assert isinstance(result[key], int), (key, result[key])
    # The workload, not the figures: every connection came up, every lot was set up.
    assert result["conns"] > 0
    assert result["conns_closed_by_server"] == 0
    assert result["lots"] > 0
    assert result["state_lots"] == result["lots"]
    assert result["setup_commands"] == result["lots"] * 42
    assert result["setup_refused"] == 0
    assert result["ledger_entries"] >= result["setup_commands"]
    assert result["extrapolated"] is True
    assert result["targets"] == {
        "edge_bytes_per_conn": 65536,
        "sequencer_rss_at_100k_lots_bytes": 1 << 30,
    }
    assert result["machine"]["cpu_count"]
