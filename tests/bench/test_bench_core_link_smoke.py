"""Smoke test of ``python -m bench core --link``: the sequencer runs as its own
process, a synthetic edge bids over the link, and every key is reported (no
timing asserts)."""

from __future__ import annotations

from tests.bench.suite import assert_positive_figures, run_suite

NUMERIC_KEYS = (
    "link_durable_per_s",
    "link_raw_lmdb_entries_per_s",
    "link_apply_per_s",
    "link_raw_plus_apply_per_s",
    "link_to_raw_plus_apply_ratio",
    "link_to_raw_ratio",
    "link_to_apply_ratio",
    "link_ack_p50_us",
    "link_ack_p99_us",
    "link_ack_p999_us",
    "link_closed_ack_p50_us",
    "link_open_rate_per_s",
    "link_batches",
    "link_mean_batch_entries",
    "link_max_batch_entries",
    "link_frames_sent",
    "link_mean_submits_per_frame",
    "link_open_batches",
    "link_bytes_to_sequencer_per_cmd",
    "link_bytes_to_edge_per_cmd",
)
# CPU time is read in clock ticks: present, but a tick may not have passed.
CPU_KEYS = (
    "link_sequencer_cpu_us_per_cmd",
    "link_open_sequencer_cpu_us_per_cmd",
    "link_edge_cpu_us_per_cmd",
)


def test_bench_core_link_quick_json() -> None:
    result = run_suite("core", "--link", timeout=120)
    assert result["link"] is True
    assert_positive_figures(result, NUMERIC_KEYS)
    for key in CPU_KEYS:
        assert isinstance(result[key], int | float) and result[key] >= 0, (key, result[key])
    # Acks came back over the link, every bid was valid, nothing went missing, and
    # the sequencer stopped cleanly: the workload, not the speed, is checked.
    assert result["link_bids"] > 0
    assert result["link_open_bids"] > 0
    first, last = result["link_seq_range"]
    assert last - first + 1 == result["link_bids"]
    assert result["link_raw_entries"] == result["link_bids"]
    assert result["link_rejected"] == 0
    assert result["link_open_rejected"] == 0
    assert result["link_open_missing_acks"] == 0
    assert result["link_sequencer_exit"] == 0
