"""A short ``emall`` Locust run against a real ``pubex serve``, and the load summary.

A handful of traders for a few seconds through the same runner as ``make
load SCENARIO=emall``: the items are provisioned, signed order actions are
acknowledged (acks and ledgered book refusals, no gateway error, timeout or
lost connection), the reports are written, and ``bench.locust.summary``
renders the run into the "Load scenarios (make load)" section.  No latency
bound: the suite never asserts a speed (``--no-latency-bounds``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.locust import summary
from tests.load.support import run_short

pytestmark = pytest.mark.timeout(180)


def test_short_emall_run_orders_are_acknowledged(tmp_path: Path) -> None:
    server_json, base = run_short(
        "emall",
        5,
        5,
        tmp_path,
        (".html", ".json", ".md", "_stats.csv", "-plan.json", "-server.log"),
    )
    plan = json.loads(Path(base + "-plan.json").read_text())
    assert len(plan["items"]) == 100 and len(plan["bidders"]) == 5
    assert {t["role"] for t in plan["bidders"]} == {"supplier", "purchaser", "bidder"}
    report = json.loads(server_json.read_text())
    assert report["broken"] == []
    assert all(r["failures"] == 0 for r in report["locust"])
    orders = [r for r in report["locust"] if r["name"].startswith("order ")]
    assert sum(r["requests"] for r in orders) > 0
    commands = report["server"]["commands"]
    assert commands.get('{outcome="accepted",type="PlaceOrder"}', 0) > 0
    assert report["server"]["frames_refused"] == {}

    out = tmp_path / "load.json"
    assert summary.main(["--reports", str(tmp_path), "--out", str(out)]) == 0
    collected = json.loads(out.read_text())["scenarios"]["emall"]
    assert collected["failures"] == 0 and collected["requests"]["requests"] > 0
    text = "\n".join(summary.section(out))
    assert "## Load scenarios (make load)" in text and "| emall |" in text
