"""Playback of one lot for supervisors: ``pubex replay DIR --lot ID --html OUT``.

Replays the ledger (or an export: ``ledger.audit.open_source``; every entry
must re-produce its recorded events) and runs the supervision detectors
in-process over the same entries, then writes ONE self-contained HTML file:
the lot's terms, the price over time (inline SVG), every accepted bid (seq,
server time, bidder code, amount), bids by code, extensions, the alerts on
the lot (level, rule, evidence seqs, detail), its public timeline and its
result.  No script, no stylesheet link, no font or image fetched: it opens
offline, and nothing in it names a network address.

Bidders appear by their per-lot codes in the bids; the alerts name the
subjects involved (supervisors' view -- the file is not for publication).
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.messages import (
    AnyCommand,
    BidAccepted,
    Event,
    LotCreated,
    LotExtended,
    LotSold,
    LotTerminated,
    LotUnsold,
)
from engine.router import Router
from ledger.audit import describe, open_source
from ledger.record import EntryBody, Envelope, decode_envelope
from ledger.replay import replay
from services.supervision.detectors import Detectors, MemoryState
from services.supervision.model import Alert, SupervisionConfig

CST = dt.timezone(dt.timedelta(hours=8))
LEVEL_COLOUR = {"block": "#b91c1c", "alert": "#c2410c", "watch": "#a16207"}


class UnknownLot(LookupError):
    pass


@dataclass(frozen=True)
class _Entry:
    seq: int
    ts_ns: int
    command: Any
    events: Sequence[Any]
    envelope: Envelope | None


@dataclass
class Bid:
    seq: int
    ts_ns: int
    code: str
    amount_fen: int
    bid_no: int


@dataclass
class LotPlayback:
    lot_id: str
    created: LotCreated | None = None
    bids: list[Bid] = field(default_factory=list)
    extensions: list[tuple[int, int, int]] = field(default_factory=list)  # seq, ts, new end
    timeline: list[tuple[int, int, str]] = field(default_factory=list)  # seq, ts, line
    alerts: list[Alert] = field(default_factory=list)
    result: str = ""
    result_seq: int = 0
    entries: int = 0


def collect(
    path: str | Path,
    lot_id: str,
    until_seq: int | None = None,
    config: SupervisionConfig | None = None,
) -> LotPlayback:
    """Replay ``path`` (a ledger or an export), keeping what concerns ``lot_id``."""
    out = LotPlayback(lot_id)
    detectors, state = Detectors(config), MemoryState()
    related: set[str] = set()  # the lot's bidder ids, for platform-wide alerts

    def on_entry(body: EntryBody, cmd: AnyCommand, events: list[Event]) -> None:
        out.entries += 1
        entry = _Entry(body.seq, body.ts_ns, cmd, events, decode_envelope(body.meta))
        for a in detectors.apply(entry, state):
            if a.lot_id == lot_id or (not a.lot_id and related & set(a.subjects)):
                out.alerts.append(a)
        for ev in events:
            if ev.lot_id != lot_id:
                continue
            out.timeline.append((body.seq, body.ts_ns, describe(cmd, ev)))
            if isinstance(ev, LotCreated) and out.created is None:
                out.created = ev
            elif isinstance(ev, BidAccepted):
                out.bids.append(Bid(body.seq, body.ts_ns, ev.bidder_code, ev.amount_fen, ev.bid_no))
            elif isinstance(ev, LotExtended):
                out.extensions.append((body.seq, body.ts_ns, ev.end_ns))
            elif isinstance(ev, LotSold):
                out.result = f"成交 Sold to {ev.bidder_code} at {_yuan(ev.price_fen)}"
                out.result_seq = body.seq
            elif isinstance(ev, LotUnsold):
                out.result = f"流拍 Unsold ({ev.reason})"
                out.result_seq = body.seq
            elif isinstance(ev, LotTerminated):
                out.result = f"终止 Terminated ({ev.reason})"
                out.result_seq = body.seq
        watch = state.lot(lot_id)
        if watch is not None:
            related.update(watch.ids)

    with open_source(path) as source:
        replay(Router(), source, until_seq=until_seq, on_entry=on_entry)
    if out.created is None:
        raise UnknownLot(lot_id)
    return out


# ------------------------------------------------------------------ rendering


def _t(ns: int) -> str:
    t = dt.datetime.fromtimestamp(ns / 1e9, CST)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{(ns // 1_000_000) % 1000:03d}"


def _yuan(fen: int) -> str:
    return f"¥{fen // 100:,}.{fen % 100:02d}"


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def price_svg(pb: LotPlayback, width: int = 900, height: int = 300) -> str:
    """The price over time as an inline SVG step line (no namespace URL needed
    inside HTML), extensions as dashed verticals."""
    if not pb.bids:
        return '<p class="muted">无出价 No accepted bids</p>'
    pad_l, pad_r, pad_t, pad_b = 90, 20, 16, 40
    t0 = pb.bids[0].ts_ns
    t1 = (
        max(pb.bids[-1].ts_ns, *(e[1] for e in pb.extensions))
        if pb.extensions
        else pb.bids[-1].ts_ns
    )
    t1 = max(t1, t0 + 1)
    lo = min(b.amount_fen for b in pb.bids)
    hi = max(b.amount_fen for b in pb.bids)
    if hi == lo:
        hi = lo + 1
    iw, ih = width - pad_l - pad_r, height - pad_t - pad_b

    def x(ts: int) -> float:
        return pad_l + iw * (ts - t0) / (t1 - t0)

    def y(fen: int) -> float:
        return pad_t + ih * (1 - (fen - lo) / (hi - lo))

    points: list[str] = []
    prev = None
    for b in pb.bids:
        if prev is not None:
            points.append(f"{x(b.ts_ns):.1f},{y(prev):.1f}")
        points.append(f"{x(b.ts_ns):.1f},{y(b.amount_fen):.1f}")
        prev = b.amount_fen
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'role="img" aria-label="price over time">',
        f'<rect x="{pad_l}" y="{pad_t}" width="{iw}" height="{ih}" fill="#f8fafc" '
        'stroke="#cbd5e1"/>',
    ]
    for seq, ts, _end in pb.extensions:
        parts.append(
            f'<line x1="{x(ts):.1f}" x2="{x(ts):.1f}" y1="{pad_t}" y2="{pad_t + ih}" '
            f'stroke="#94a3b8" stroke-dasharray="4 3"><title>延时 extension #{seq}</title></line>'
        )
    parts.append(
        f'<polyline fill="none" stroke="#2563eb" stroke-width="2" points="{" ".join(points)}"/>'
    )
    for b in pb.bids:
        parts.append(
            f'<circle cx="{x(b.ts_ns):.1f}" cy="{y(b.amount_fen):.1f}" r="3" fill="#1d4ed8">'
            f"<title>#{b.seq} {_e(b.code)} {_yuan(b.amount_fen)}</title></circle>"
        )
    for fen, label in ((hi, _yuan(hi)), (lo, _yuan(lo))):
        parts.append(
            f'<text x="{pad_l - 6}" y="{y(fen) + 4:.1f}" text-anchor="end" font-size="12">'
            f"{_e(label)}</text>"
        )
    for ts, anchor in ((t0, "start"), (t1, "end")):
        parts.append(
            f'<text x="{x(ts):.1f}" y="{height - 12}" text-anchor="{anchor}" font-size="12">'
            f"{_e(_t(ts)[11:19])}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font:15px/1.45 system-ui,"Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:24px;
color:#0f172a;max-width:1100px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid
#e2e8f0}table{border-collapse:collapse;width:100%;font-size:14px}th,td{padding:3px 8px;
border-bottom:1px solid #f1f5f9;text-align:left}td.r,th.r{text-align:right;
font-variant-numeric:tabular-nums}.muted{color:#64748b}.level{color:#fff;border-radius:4px;
padding:1px 6px;font-size:12px;text-transform:uppercase}dl{display:grid;
grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0}dt{color:#64748b}dd{margin:0}
.result{font-size:18px;font-weight:700}
"""


def render(pb: LotPlayback, source: str) -> str:
    c = pb.created
    assert c is not None
    by_code: dict[str, list[Bid]] = {}
    for b in pb.bids:
        by_code.setdefault(b.code, []).append(b)
    rows_bids = "".join(
        f'<tr data-seq="{b.seq}"><td class="r">{b.seq}</td><td>{_t(b.ts_ns)}</td>'
        f'<td class="code">{_e(b.code)}</td><td class="r">{_yuan(b.amount_fen)}</td>'
        f'<td class="r">{b.bid_no}</td></tr>'
        for b in pb.bids
    )
    rows_codes = "".join(
        f'<tr><td class="code">{_e(code)}</td><td class="r">{len(bs)}</td>'
        f"<td>{_t(bs[0].ts_ns)}</td><td>{_t(bs[-1].ts_ns)}</td>"
        f'<td class="r">{_yuan(max(b.amount_fen for b in bs))}</td></tr>'
        for code, bs in sorted(by_code.items())
    )
    rows_ext = "".join(
        f'<tr><td class="r">{seq}</td><td>{_t(ts)}</td><td>{_t(end)}</td></tr>'
        for seq, ts, end in pb.extensions
    )
    rows_alerts = "".join(
        f'<tr data-rule="{_e(a.rule)}"><td><span class="level" style="background:'
        f'{LEVEL_COLOUR.get(a.level, "#475569")}">{_e(a.level)}</span></td>'
        f'<td>{_e(a.rule)}</td><td class="r">{a.seq}</td><td>{_t(a.ts_ns)}</td>'
        f"<td>{_e(', '.join(map(str, a.evidence)))}</td><td>{_e(', '.join(a.subjects))}</td>"
        f"<td>{_e(a.detail)}</td></tr>"
        for a in pb.alerts
    )
    rows_tl = "".join(
        f'<tr><td class="r">{seq}</td><td>{_t(ts)}</td><td>{_e(line)}</td></tr>'
        for seq, ts, line in pb.timeline
    )

    def table(head: str, rows: str, empty: str) -> str:
        if not rows:
            return f'<p class="muted">{empty}</p>'
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"

    result = pb.result or "未结束 Not closed in this ledger"
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>回放 Playback · {_e(pb.lot_id)}</title><style>{_CSS}</style></head>
<body data-lot="{_e(pb.lot_id)}">
<h1>标的回放 Lot playback · {_e(pb.lot_id)}</h1>
<p class="muted">{_e(c.title)} · {_e(c.mechanism)} · rules {_e(c.rules.name)} ·
source {_e(Path(source).name)} ({pb.entries} entries replayed and verified)</p>
<dl>
<dt>起拍价 Start</dt><dd>{_yuan(c.start_price_fen)}</dd>
<dt>加价幅度 Increment</dt><dd>{_yuan(c.increment_fen)}</dd>
<dt>开始 Start time</dt><dd>{_t(c.start_ns)}</dd>
<dt>截止 Scheduled end</dt><dd>{_t(c.end_ns)}</dd>
<dt>出价 Bids</dt><dd>{len(pb.bids)} from {len(by_code)} codes</dd>
<dt>延时 Extensions</dt><dd>{len(pb.extensions)}</dd>
<dt>预警 Alerts</dt><dd>{len(pb.alerts)}</dd>
<dt>结果 Result</dt><dd class="result" id="result">{_e(result)}
{f"(#{pb.result_seq})" if pb.result_seq else ""}</dd>
</dl>
<h2>价格走势 Price over time</h2>
{price_svg(pb)}
<h2>出价记录 Bids</h2>
{
        table(
            '<th class="r">Seq</th><th>时间 Time</th><th>号牌 Code</th><th class="r">金额 Amount</th>'
            '<th class="r">No.</th>',
            rows_bids,
            "无出价 No accepted bids",
        )
    }
<h2>按号牌 Bids by code</h2>
{
        table(
            '<th>号牌 Code</th><th class="r">次数 Bids</th><th>首次 First</th><th>末次 Last</th>'
            '<th class="r">最高 Highest</th>',
            rows_codes,
            "—",
        )
    }
<h2>延时 Extensions</h2>
{
        table(
            '<th class="r">Seq</th><th>出价时间 Bid time</th><th>新截止 New end</th>',
            rows_ext,
            "无延时 No extensions",
        )
    }
<h2>监管预警 Alerts</h2>
{
        table(
            '<th>级别 Level</th><th>规则 Rule</th><th class="r">Seq</th><th>时间 Time</th>'
            "<th>证据 Evidence seqs</th><th>主体 Subjects</th><th>说明 Detail</th>",
            rows_alerts,
            "无预警 No alerts",
        )
    }
<h2>时间线 Timeline</h2>
{table('<th class="r">Seq</th><th>时间 Time</th><th>事件 Event</th>', rows_tl, "—")}
</body></html>
"""


def write_report(
    path: str | Path,
    lot_id: str,
    out: str | Path,
    until_seq: int | None = None,
    config: SupervisionConfig | None = None,
) -> LotPlayback:
    pb = collect(path, lot_id, until_seq, config)
    Path(out).write_text(render(pb, str(path)), encoding="utf-8")
    return pb
