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
import subprocess
import sys
from pathlib import Path

import pytest

from bench.locust import summary
from tests.load.support import require_locust

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(180)


def test_short_emall_run_orders_are_acknowledged(tmp_path: Path) -> None:
    require_locust()
    argv = [sys.executable, "-m", "bench.locust.run", "--scenario", "emall", "--users", "5"]
    argv += ["--duration", "5", "--reports", str(tmp_path), "--no-latency-bounds"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    (server_json,) = tmp_path.glob("emall-*-server.json")
    base = str(server_json).removesuffix("-server.json")
    for suffix in (".html", ".json", ".md", "_stats.csv", "-plan.json", "-server.log"):
        assert Path(base + suffix).stat().st_size > 0, suffix
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
