"""``pubex replay DIR --lot ID --html OUT``: one lot's self-contained playback
report, from a real ledger and from its export, through the real CLI: every
accepted bid is in it (seq, code, amount), the extension, the alerts the
detectors raise in-process, the result -- and nothing that would fetch from
a network address."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from engine.messages import PlaceBid
from tests.services.supervision_market import HOUR_NS, MINUTE_NS, NS_PER_S, Market

ROOT = Path(__file__).resolve().parents[2]


def pubex(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "gateway.entry.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_replay_html_report(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    m = Market(ledger)
    start = m.now_ns + MINUTE_NS
    end = start + HOUR_NS
    m.lot("L1", start_ns=start, end_ns=end, bidders=("a", "b", "c"))
    m.lot("L2", start_ns=start, end_ns=end, bidders=("a",))
    bids = []
    plan = [("a", 100_000, "1.2.3.4"), ("b", 101_000, "1.2.3.4"), ("c", 102_000, "5.5.5.5")]
    for i, (who, amount, ip) in enumerate(plan):
        seq, _ = m.bidder(who, PlaceBid, "L1", amount, t_ns=start + (i + 1) * MINUTE_NS, ip=ip)
        bids.append((seq, amount))
    other, _ = m.bidder("a", PlaceBid, "L2", 555_500, t_ns=start + 5 * MINUTE_NS)
    late, events = m.bidder("a", PlaceBid, "L1", 103_000, t_ns=end - 3 * NS_PER_S, ip="9.9.9.9")
    assert any(type(e).__name__ == "LotExtended" for e in events)
    bids.append((late, 103_000))
    m.fire(end + HOUR_NS)
    m.close()

    export = tmp_path / "l.export"
    assert pubex("ledger", "export", str(ledger), str(export)).returncode == 0
    for source in (ledger, export):
        out = tmp_path / f"{source.name}.html"
        done = pubex("replay", str(source), "--lot", "L1", "--html", str(out))
        assert done.returncode == 0, done.stderr
        assert "4 bids" in done.stdout
        page = out.read_text(encoding="utf-8")
        for seq, amount in bids:
            assert f'data-seq="{seq}"' in page
            assert f"¥{amount // 100:,}.00" in page
        assert f'data-seq="{other}"' not in page and "5,555.00" not in page  # L2's bid
        codes = set(re.findall(r'<td class="code">(\d+)</td>', page))
        assert codes == {"0001", "0002", "0003"}
        assert '<svg class="chart"' in page and "<polyline" in page
        assert "延时 extension" in page  # the late bid's extension on the chart
        assert 'data-rule="W-D1"' in page  # computed by the detectors in-process
        assert "Sold to 0001 at ¥1,030.00" in page
        lowered = page.lower()
        for needle in ("http:", "https:", "//", "<script", "<link", "src=", "url(", "@import"):
            assert needle not in lowered, needle

    assert pubex("replay", str(ledger), "--html", str(tmp_path / "x.html")).returncode == 2
    missing = pubex("replay", str(ledger), "--lot", "NOPE", "--html", str(tmp_path / "x.html"))
    assert missing.returncode == 2 and "no lot" in missing.stderr
