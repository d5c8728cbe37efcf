"""A short Locust run against a real ``pubex serve`` (bench/locust/run.py).

A handful of storm users for a few seconds, through the same runner as ``make
load``: every request succeeds (acks and ledgered refusals, no gateway error,
timeout or lost connection), the server acknowledged them, and the CSV, HTML,
JSON and server reports are written.  No latency bound: the suite never
asserts a speed (``--no-latency-bounds``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.load.support import run_short

pytestmark = pytest.mark.timeout(180)


def test_short_locust_run_succeeds_and_writes_reports(tmp_path: Path) -> None:
    server_json, _ = run_short(
        "storm",
        4,
        4,
        tmp_path,
        (".html", ".json", ".md", "_stats.csv", "_failures.csv", "-plan.json"),
    )
    report = json.loads(server_json.read_text())
    assert report["broken"] == []
    rows = {(r["type"], r["name"]): r for r in report["locust"]}
    bids = [r for (kind, name), r in rows.items() if name.startswith("place_bid")]
    assert sum(r["requests"] for r in bids) > 0
    assert all(r["failures"] == 0 for r in report["locust"])
    assert rows[("WS", "connect (bidder)")]["requests"] == 4
    server = report["server"]
    accepted = server["commands"].get('{outcome="accepted",type="PlaceBid"}', 0)
    assert accepted > 0 and server["replies"] >= accepted
    assert server["frames_refused"] == {}
