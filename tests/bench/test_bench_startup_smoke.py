"""Smoke test of ``python -m bench startup``: it runs and reports every key (no timing asserts)."""

from __future__ import annotations

from tests.bench.suite import assert_positive_figures, run_suite


def test_bench_startup_quick_json() -> None:
    result = run_suite("startup", timeout=120)
    assert_positive_figures(
        result,
        (
            "entries",
            "full_replay_s",
            "recover_s",
            "startup_s",
            "startup_check_s",
            "check_whole_s",
            "sequencer_ready_s",
            "python_import_s",
            "startup_to_full_replay_ratio",
            "snapshot_every_entries",
            "snapshot_seq",
            "snapshot_bytes",
            "ledger_file_bytes",
        ),
    )
    assert result["targets"] == {"startup_to_full_replay_ratio": 0.1}
    # The stop is inside the last snapshot interval, and recovery rebuilds the very
    # state a full replay does.
    assert 0 <= result["tail_entries"] < result["snapshot_every_entries"]
    assert result["entries"] <= result["target_entries"]
    assert result["recover_matches_full_replay"] is True
    assert result["startup_matches_full_replay"] is True
