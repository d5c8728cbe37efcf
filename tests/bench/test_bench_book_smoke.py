"""Smoke test of ``python -m bench book``: it runs and reports every key (no timing asserts).

Peers may be "not installed" (they are an optional extra)."""

from __future__ import annotations

from tests.bench.suite import run_suite


def test_bench_book_quick_json() -> None:
    r = run_suite("book", "--ops", "5000")
    assert isinstance(r["pubex_ops_per_s"], int) and r["pubex_ops_per_s"] > 0
    assert r["p99_us"] > 0
    assert r["target"] == 2.0
    assert set(r["peers"]) == {"cython-orderbook", "akhil4n-orderbook", "fastlob"}
    for value in r["peers"].values():
        assert (isinstance(value, int) and value > 0) or isinstance(value, str)
    assert "fastest_peer" in r and "ratio_to_fastest_peer" in r
