"""The console's per-mode views in a real browser (issue 4): a sealed tender
shows only its count while bids are sealed, then the published opening record
as a ranking; nothing of a sealed amount reaches the page before the opening."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from nacl.signing import SigningKey

from engine.rules import TENDER_LOWEST
from engine.sealed import seal_commitment
from gateway.wire import protocol as p
from tests.console.test_console import (  # the same browser and server set-up
    TIMEOUT,
    Bidder,
    Server,
    Staff,
    expect,
    page,  # noqa: F401 (a fixture)
    server,  # noqa: F401 (a fixture)
)

NS = 1_000_000_000
CANARY = 7_654_321  # a unique amount: it must not reach the page before the opening


def sealed_action(b: Bidder, action: str, **kw: object) -> dict:  # type: ignore[type-arg]
    b.seq += 1
    payload = p.SealedPayload(p.SEALED_DOMAIN, action, "T9", b.key_id, b.seq, **kw)  # type: ignore[arg-type]
    b.ws.send(p.sealed_frame(b.key, payload))
    return b.wait({b.seq})[b.seq]


def test_sealed_lot_shows_count_then_the_opening_record(server: Server, page: Any) -> None:  # noqa: F811
    staff = Staff(server.ws_url)
    keys = [SigningKey.generate() for _ in range(3)]
    now = time.time_ns()
    rules = msgspec.structs.replace(TENDER_LOWEST, reveal_window_ns=4 * NS)
    frames: list[p.Frame] = [
        p.CreateLotFrame(
            staff.next(), "T9", "sealed", "Tender", 10_000_000, 1, now, now + 6 * NS, rules=rules
        ),
        p.PublishLotFrame(staff.next(), "T9"),
    ]
    for n, k in enumerate(keys):
        frames += [
            p.RegisterKeyFrame(staff.next(), f"tk-{n}", f"firm-{n}", k.verify_key.encode().hex()),
            p.RegisterBidderFrame(staff.next(), "T9", f"firm-{n}"),
            p.ConfirmDepositFrame(staff.next(), "T9", f"firm-{n}", 0),
        ]
    staff.run(frames)
    bidders = [Bidder(server.ws_url, k, f"tk-{n}") for n, k in enumerate(keys)]
    amounts = [CANARY, 8_000_000, 9_000_000]
    try:
        for b, amount in zip(bidders, amounts, strict=True):
            reply = sealed_action(b, "submit", commitment=seal_commitment("T9", amount, b.key_id))
            assert reply["type"] == "ack", reply
        pg = page
        pg.get_by_test_id("lot-row-T9").click()
        expect(pg.get_by_test_id("detail-lot")).to_have_text("T9", timeout=TIMEOUT)
        expect(pg.get_by_test_id("bids-T9")).to_have_text("3", timeout=TIMEOUT)
        expect(pg.get_by_test_id("detail-ranking")).to_be_hidden()
        expect(pg.get_by_test_id("detail-phase")).to_contain_text("Decryption", timeout=TIMEOUT)
        for b, amount in zip(bidders, amounts, strict=True):
            reply = sealed_action(b, "reveal", amount_fen=amount, nonce=b.key_id)
            assert reply["type"] == "ack", reply
        assert "7654321" not in pg.content() and "76,543" not in pg.content()
        ranking = pg.get_by_test_id("detail-ranking")
        expect(ranking).to_be_visible(timeout=TIMEOUT)
        expect(ranking.locator("tbody tr")).to_have_count(3, timeout=TIMEOUT)
        expect(ranking.locator("tbody tr").first).to_contain_text("76,543")  # lowest wins
    finally:
        for b in bidders:
            b.close()
        staff.close()


def test_staff_register_and_confirm_a_deposit_from_the_console(server: Server, page: Any) -> None:  # noqa: F811
    """Issue 6: staff confirm a deposit in the console, and that bidder's next bid is accepted."""
    staff = Staff(server.ws_url)
    staff.seq = 100_000  # past the other test's staff commands (same staff id: they'd be retries)
    key = SigningKey.generate()
    now = time.time_ns()
    staff.run(
        [
            p.CreateLotFrame(
                staff.next(), "R7", "english", "Walk-in", 100_000, 1_000, now, now + 3600 * NS
            ),
            p.PublishLotFrame(staff.next(), "R7"),
            p.RegisterKeyFrame(staff.next(), "wk-1", "walk-in", key.verify_key.encode().hex()),
        ]
    )
    bidder = Bidder(server.ws_url, key, "wk-1")
    try:
        bidder.seq += 1
        bidder.ws.send(p.bid_frame(key, "wk-1", "R7", 100_000, bidder.seq))
        refused = bidder.wait({bidder.seq})[bidder.seq]
        assert refused["type"] == "error" and refused["name"] == "bidder_not_eligible", refused
        pg = page
        pg.get_by_test_id("lot-row-R7").click()
        expect(pg.get_by_test_id("detail-lot")).to_have_text("R7", timeout=TIMEOUT)
        pg.get_by_test_id("reg-bidder").fill("walk-in")
        pg.get_by_test_id("btn-register").click()
        expect(pg.locator("li.ok", has_text="Register bidder R7")).to_have_count(1, timeout=TIMEOUT)
        pg.get_by_test_id("reg-amount").fill("0")
        pg.get_by_test_id("btn-deposit").click()
        expect(pg.locator("li.ok", has_text="Confirm deposit R7")).to_have_count(1, timeout=TIMEOUT)
        bidder.bid("R7", 100_000)  # asserts the ack
    finally:
        bidder.close()
        staff.close()
