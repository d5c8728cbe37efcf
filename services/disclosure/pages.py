"""The public HTML pages of disclosure: self-contained, every value escaped.

Rendered from the public records only (:class:`DisclosureReader`); amounts in
yuan with fen, times in China time (UTC+8) with ms, as RULES.md §8 asks.
"""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Any

from services.disclosure.projection import LotPublic, Notice

CST = dt.timezone(dt.timedelta(hours=8), "CST")

KIND_LABEL = {
    "announcement": "出让公告 Announcement",
    "change": "变更公告 Change notice",
    "freeze": "中止公告 Freeze notice",
    "resume": "恢复公告 Resume notice",
    "terminate": "终止公告 Termination notice",
    "opening": "开标记录 Opening record",
    "result": "成交公示 Result",
    "unsold": "流拍公告 Unsold notice",
    "award_voided": "成交无效 Award void",
}

_STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:1em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;"
    "text-align:left;vertical-align:top}.k{color:#555}h1{font-size:1.4em}"
)


def fmt_time(ts_ns: int) -> str:
    if ts_ns <= 0:
        return "-"
    t = dt.datetime.fromtimestamp(ts_ns / 1e9, CST)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{(ts_ns // 1_000_000) % 1000:03d} CST"


def fmt_fen(fen: int) -> str:
    return f"¥{fen // 100:,}.{fen % 100:02d}"


def _value(key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, list):
            return "<br>".join(_value(key, v) for v in value)
        if isinstance(value, dict):
            return ", ".join(f"{escape(str(k))}: {_value(str(k), v)}" for k, v in value.items())
        return escape(str(value))
    if key.endswith("_fen"):
        return escape(fmt_fen(value))
    if key.endswith("_ns") and key not in ("extension_window_ns",) and value > 10**17:
        return escape(fmt_time(value))
    return escape(str(value))


def _details(details: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><th class=k>{escape(k)}</th><td>{_value(k, v)}</td></tr>" for k, v in details.items()
    )
    return f"<table>{rows}</table>"


def _notice_html(n: Notice) -> str:
    label = KIND_LABEL.get(n.kind, n.kind)
    deadline = (
        f"<p>公示期至 Publicity until: {escape(fmt_time(n.deadline_ns))}</p>"
        if n.deadline_ns
        else ""
    )
    return (
        f"<section id=n{n.id}><h2>#{n.id} {escape(label)} — "
        f"<a href='/lots/{escape(n.lot_id, quote=True)}'>{escape(n.lot_id)}</a> "
        f"{escape(n.title)}</h2><p class=k>{escape(fmt_time(n.ts_ns))} · ledger #{n.seq}</p>"
        f"{_details(n.details)}{deadline}</section>"
    )


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=zh><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1>{body}"
        "<p class=k>JSON: <a href='/api/notices'>/api/notices?since=ID</a> · "
        "<a href='/checkpoints.json'>/checkpoints.json?since=SEQ</a></p></body></html>"
    )


def index_page(notices: list[Notice], lots: list[LotPublic]) -> str:
    rows = "".join(
        f"<tr><td><a href='/lots/{escape(lot.lot_id, quote=True)}'>{escape(lot.lot_id)}</a></td>"
        f"<td>{escape(lot.title)}</td><td>{escape(lot.mechanism)}</td>"
        f"<td>{escape(lot.status)}</td></tr>"
        for lot in lots
    )
    body = (
        f"<h2>标的 Lots</h2><table><tr><th>lot</th><th>title</th><th>mechanism</th>"
        f"<th>status</th></tr>{rows}</table><h2>最新公告 Latest notices</h2>"
        + "".join(_notice_html(n) for n in notices)
    )
    return _page("信息公开 Public notices", body)


def lot_page(lot: LotPublic, notices: list[Notice]) -> str:
    terms = {"mechanism": lot.mechanism, "status": lot.status, "has_reserve": lot.has_reserve}
    body = _details({**terms, **lot.terms}) + "".join(_notice_html(n) for n in notices)
    return _page(f"{lot.lot_id} {lot.title}", body)
