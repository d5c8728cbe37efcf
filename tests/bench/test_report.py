"""Smoke test of ``python -m bench report``: every suite at tiny sizes, one markdown table
per suite, the raw JSON beside it and an SVG chart that parses (no timing asserts)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from bench import report
from tests.bench.suite import REPO_ROOT

pytestmark = pytest.mark.timeout(240)

SVG = "{http://www.w3.org/2000/svg}"


def sections(md: str) -> dict[str, str]:
    """``## name — title`` -> that section's text (up to the next ``## ``)."""
    parts = re.split(r"^## ", md, flags=re.M)[1:]
    return {p.split(" ", 1)[0].strip(): p for p in parts}


def has_table(text: str) -> bool:
    return "| figure | value | peer or limit, same run | ratio | target | met |" in text


def check_svg(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    assert root.findall(f"{SVG}polyline") or root.findall(f"{SVG}circle")
    labels = {t.text for t in root.iter(f"{SVG}text")}
    assert {"p50", "p90", "p99", "p99.9"} <= labels
    return root


def test_report_tiny_run(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    proc = subprocess.run(
        # --jobs 3: the suites side by side, for time; the figures do not matter here.
        [sys.executable, "-m", "bench", "report", "--tiny", "--jobs", "3", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = out.read_text()
    raw = json.loads((tmp_path / "benchmarks.json").read_text())
    assert raw["mode"] == "tiny" and raw["machine"]["cpu_count"]
    secs = sections(md)
    from bench.__main__ import SUITES

    for name in (n for n in SUITES if n != "report"):
        run = raw["suites"][name]
        assert "result" in run, (name, run.get("error"), run.get("stderr_tail"))
        assert name in secs and has_table(secs[name]), name
    if "services" not in SUITES:
        assert "Not run" in secs["services"]
    assert "## Targets" in md and "machine" in md.lower()
    # The chart: the gateway sweep's steps, drawn and referenced from the markdown.
    sweep = raw["suites"]["gateway"]["result"]["ack_sweep"]
    assert [s["fraction"] for s in sweep] == [0.25, 1.0]
    assert all(s["bad"] == 0 for s in sweep)
    check_svg(tmp_path / "benchmarks-ack-latency.svg")
    assert "](benchmarks-ack-latency.svg)" in md
    # Re-rendering from the saved JSON gives the same markdown.
    again = tmp_path / "again" / "benchmarks.md"
    saved = str(tmp_path / "benchmarks.json")
    subprocess.run(
        [sys.executable, "-m", "bench", "report", "--from-json", saved, "--out", str(again)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert again.read_text().replace("../benchmarks.json", "benchmarks.json") == md
    assert not (tmp_path / "again" / "benchmarks.json").exists()


def fake_report() -> dict[str, Any]:
    return {
        "generated_utc": "2026-01-01 00:00:00 UTC",
        "mode": "full",
        "git_commit": "abc1234",
        "machine": {"platform": "Linux", "cpu_count": 2, "python": "3.11.7"},
        "load_avg_start": [1.0, 1.0, 1.0],
        "load_avg_end": [2.0, 1.0, 1.0],
        "elapsed_s": 1.0,
        "suites": {
            "core": {"command": "python -m bench core --json", "error": "exit code 1"},
            "services": {
                "command": "python -m bench services --json",
                "result": {
                    "follower_entries_per_s": 40_000,
                    "raw_scan_entries_per_s": 100_000,
                    "live_lag_p99_ms": 12.5,
                    "followers": {"supervision": 40_000, "registry": 60_000},
                },
            },
            "gateway": {
                "command": "python -m bench gateway --json --sweep",
                "result": {
                    "acks_per_s": 1000,
                    "targets": {"ack_p99_us": 10_000},
                    "ack_sweep_max_per_s": 1000,
                    "ack_sweep": [
                        {
                            "fraction": f,
                            "offered_per_s": round(1000 * f),
                            "completed_per_s": round(1000 * f),
                            "p50_us": 1000 * f,
                            "p90_us": 2000 * f,
                            "p99_us": 4000 * f,
                            "p999_us": 90_000 * f,
                            "max_us": 100_000 * f,
                            "missing_acks": 0,
                            "bad": 0,
                        }
                        for f in (0.1, 0.5, 1.0)
                    ],
                },
            },
            "newsuite": {"command": "x", "result": {"things_per_s": 5, "targets": {}}},
            "absent": {"skipped": "not registered"},
        },
    }


def test_report_renders_failures_services_and_unknown_suites(tmp_path: Path) -> None:
    out = tmp_path / "docs" / "benchmarks.md"
    report.write(fake_report(), out, tmp_path / "docs" / "benchmarks.json", out.with_name("c.svg"))
    md = out.read_text()
    secs = sections(md)
    assert "**Failed: exit code 1.**" in secs["core"]
    assert "Not run: not registered" in secs["absent"]
    # Issue 6's targets: follower/raw 0.4 < 0.5 is not met; lag 12.5 ms <= 50 ms is.
    svc = secs["services"]
    assert has_table(svc)
    lines = [ln for ln in svc.splitlines() if ln.startswith("| slowest follower")]
    assert lines and "0.40" in lines[0] and "**NOT met**" in lines[0]
    lag = next(ln for ln in svc.splitlines() if ln.startswith("| live lag p99"))
    assert lag.rstrip().endswith("| met |")
    assert "followers.registry" in svc
    assert has_table(secs["newsuite"]) and "things_per_s" in secs["newsuite"]
    # The sweep: the highest step whose p99 met 10 ms is 100 % (4 ms).
    assert "| highest swept offered rate with ack p99 ≤ 10,000 µs | 1,000/s |" in md
    root = check_svg(out.with_name("c.svg"))
    assert len(root.findall(f"{SVG}polyline")) == 4
    assert "](c.svg)" in md
