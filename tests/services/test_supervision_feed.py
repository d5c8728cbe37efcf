"""The supervision service's live feed and complaint API over a real process:
a real WebSocket client on ``/ws/alerts`` gets the backlog, then alerts as the
follower raises them from a ledger that keeps growing, and handling decisions
as they are ledgered; a reconnect with ``since`` resumes after the last alert
seen.  ``/api/complaints`` serves the complaint with its deadline and answer."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket

from engine.messages import AnswerComplaint, FileComplaint, HandleAlert, PlaceBid
from tests import tokens
from tests.polling import wait_for
from tests.services.service_process import start, wait_listening
from tests.services.supervision_market import HOUR_NS, MINUTE_NS, Market
from tests.services.test_supervision_service import get

AUTH = [f"Authorization: Bearer {tokens.SUPERVISOR}"]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Market, str]]:
    data = tmp_path / "data"
    market = Market(data / "ledger")
    start_ns = market.now_ns + MINUTE_NS
    market.lot("L1", start_ns=start_ns, end_ns=start_ns + 4 * HOUR_NS, bidders=("a", "b", "c"))
    market.bidder("a", PlaceBid, "L1", 100_000, t_ns=start_ns + MINUTE_NS, ip="1.2.3.4")
    market.bidder("b", PlaceBid, "L1", 101_000, t_ns=start_ns + 2 * MINUTE_NS, ip="1.2.3.4")
    market.journal.commit()
    log = tmp_path / "supervise.log"
    proc = start("supervise", data, log)
    try:
        url = wait_listening(proc, log)
        yield market, url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        market.close()


def recv(ws: Any) -> dict[str, Any]:
    msg: dict[str, Any] = json.loads(ws.recv())
    return msg


def test_ws_feed_pushes_alerts_and_handling_and_resumes(served: tuple[Market, str]) -> None:
    market, url = served
    feed = url.replace("http://", "ws://") + "ws/alerts"
    ws = websocket.create_connection(f"{feed}?since=0", timeout=20, header=AUTH)
    try:
        assert recv(ws)["type"] == "hello"
        first = recv(ws)
        assert first["type"] == "alert" and first["handling"] == []
        a1 = first["alert"]
        assert (a1["alert_id"], a1["rule"], a1["lot_id"]) == (1, "W-D1", "L1")

        # Live: a supervisor's decision, then a third bidder from the same IP.
        t = market.now_ns + MINUTE_NS
        origin = "supervisor:s1"
        cmd = HandleAlert(origin, market.next_seq(origin), "L1", a1["key"], "escalate", "same IP")
        esc, _ = market.send(cmd, t, ip="10.0.0.9")
        market.journal.commit()
        handled = recv(ws)
        assert handled["type"] == "handling" and handled["alert_id"] == 1
        assert (handled["handling"]["seq"], handled["handling"]["action"]) == (esc, "escalate")
        market.bidder("c", PlaceBid, "L1", 102_000, t_ns=t + MINUTE_NS, ip="1.2.3.4")
        market.journal.commit()
        second = recv(ws)
        assert second["type"] == "alert" and second["alert"]["alert_id"] == 2
        assert second["alert"]["subjects"] == ["a", "b", "c"]
    finally:
        ws.close()

    # Resume after the last alert seen: only newer ones (none yet), then live.
    ws = websocket.create_connection(f"{feed}?since=1&lot=L1", timeout=20, header=AUTH)
    try:
        assert recv(ws)["since"] == 1
        again = recv(ws)
        assert (again["type"], again["alert"]["alert_id"]) == ("alert", 2)
    finally:
        ws.close()
    # And from the start, an alert carries its handling so far.
    ws = websocket.create_connection(f"{feed}?since=0", timeout=20, header=AUTH)
    try:
        recv(ws)
        assert [h["action"] for h in recv(ws)["handling"]] == ["escalate"]
    finally:
        ws.close()
    with pytest.raises(websocket.WebSocketBadStatusException):  # refused before the upgrade
        websocket.create_connection(f"{feed}?since=x", timeout=20)


def test_complaints_api(served: tuple[Market, str]) -> None:
    market, url = served
    t = market.now_ns + MINUTE_NS
    filed, _ = market.bidder("a", FileComplaint, "L1", "c-9", "保证金退还延迟", t_ns=t)
    origin = "supervisor:s1"
    market.send(AnswerComplaint(origin, market.next_seq(origin), "c-9", "accept", ""), t + 1)
    market.send(AnswerComplaint(origin, market.next_seq(origin), "c-9", "answer", "已退"), t + 2)
    market.journal.commit()

    def answered() -> Any:
        page = get(url + "api/complaints")
        assert isinstance(page, dict)
        return page if page["complaints"] and page["complaints"][0]["answered_seq"] else None

    page = wait_for(answered, 10, "the complaint answered")
    [c] = page["complaints"]
    assert (c["complaint_id"], c["filed_seq"], c["text"], c["answer"]) == (
        "c-9",
        filed,
        "保证金退还延迟",
        "已退",
    )
    assert [s["step"] for s in c["steps"]] == ["accept", "answer"]
    assert c["deadline_rule"] == "7 working days" and c["overdue"] is False
    assert page["next"] == filed
    one = get(url + "api/complaints/c-9")
    assert one == c
    after: Any = get(f"{url}api/complaints?since={filed}")
    assert after["complaints"] == []
