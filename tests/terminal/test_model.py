"""The terminal's model, key files and wording -- no curses, no server."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from engine.codes import Reject
from gateway.clients.terminal.keys import (
    KeyFileError,
    ReceiptLog,
    SeqStore,
    load_key,
    load_public,
    write_keypair,
)
from gateway.clients.terminal.model import (
    LEADING,
    NOT_BIDDING,
    OUTBID,
    WORDING,
    TerminalModel,
    describe_error,
    fmt_countdown,
    fmt_yuan,
    parse_amount,
)
from gateway.wire import protocol as p

NOW = 1_800_000_000 * 10**9
START, INC = 100_000_000, 1_000_000  # ¥1,000,000 and ¥10,000


class Clock:
    def __init__(self) -> None:
        self.ns = NOW

    def __call__(self) -> int:
        return self.ns


def make_model(tmp_path: Path, lots: tuple[str, ...] = ("L1",)) -> TerminalModel:
    key = SigningKey(b"\x01" * 32)
    seqs = SeqStore(tmp_path / "k.state.json", now_us=lambda: 1000)
    return TerminalModel(
        key, "k1", list(lots), seqs, ReceiptLog(tmp_path / "r.jsonl"), clock=Clock()
    )


def snapshot(lot: str = "L1", *, price: int = 0, leader: str = "", seq: int = 5, **kw):
    fields = dict(
        title="t",
        mechanism="english",
        status="open",
        phase="bidding",
        price_fen=price,
        start_price_fen=START,
        increment_fen=INC,
        leader_code=leader,
        bidders=2,
        bid_count=1 if leader else 0,
        end_ns=NOW + 90 * 10**9,
        start_ns=NOW - 10**9,
        has_reserve=False,
        last_bid_ns=0,
        extensions=0,
        result="",
        seq=seq,
    )
    fields.update(kw)
    return p.LotSnapshot(lot, **fields)


def hello(codes: dict[str, str] | None = None) -> p.Hello:
    return p.Hello("bidder", NOW + 2 * 10**9, "k1", {"L1": "0001"} if codes is None else codes)


def ack(client_seq: int, seq: int = 10, retried: bool = False) -> p.Ack:
    return p.Ack(client_seq, seq, NOW, "ab" * 32, "cd" * 40, ["ef" * 32], retried)


def bid_event(seq: int, code: str, amount: int, n: int = 1) -> p.EventFrame:
    ev = {"type": "bid_accepted", "lot_id": "L1", "bidder_code": code, "amount_fen": amount}
    return p.EventFrame("L1", seq, NOW, {**ev, "bid_no": n, "priority_match": False})


# ------------------------------------------------------------ formatting


def test_money_and_countdown_formatting() -> None:
    assert fmt_yuan(123456789) == "¥1,234,567.89"
    assert fmt_yuan(5) == "¥0.05"
    assert parse_amount("1,234,567", "yuan") == 123456700
    assert parse_amount("0.5", "yuan") == 50
    assert parse_amount("123", "fen") == 123
    for bad, unit in (("1.234", "yuan"), ("abc", "yuan"), ("-5", "fen"), ("1.5", "fen")):
        with pytest.raises(ValueError):
            parse_amount(bad, unit)
    assert fmt_countdown(3_725 * 10**9) == "1:02:05"
    assert fmt_countdown(-5) == "0:00:00"


def test_every_refusal_code_has_words() -> None:
    names = [c.name for c in Reject] + [c.name for c in p.GatewayError]
    assert not [n for n in names if n not in WORDING]
    text = describe_error(404, "bid_below_increment")
    assert (
        "bid_below_increment" in text
        and "出价低于加价幅度" in text
        and "below the increment" in text
    )
    assert "unknown_key" in describe_error(1010)  # the name is derived from the code


# ------------------------------------------------------------ key files


def test_keygen_files(tmp_path: Path) -> None:
    path = tmp_path / "alice.key"
    key_id, public = write_keypair(path, "alice-1")
    assert key_id == "alice-1"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key, loaded_id = load_key(path)
    assert loaded_id == "alice-1" and key.verify_key.encode().hex() == public
    assert load_public(Path(f"{path}.pub")) == ("alice-1", public)
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        write_keypair(path)
    with pytest.raises(KeyFileError):
        load_key(Path(f"{path}.pub"))


# ------------------------------------------------------------ the model


def test_standing_follows_snapshots_and_events(tmp_path: Path) -> None:
    m = make_model(tmp_path)
    m.on_connected(hello(), "ws://x")
    assert m.offset_ns == 2 * 10**9  # countdowns run on server time
    m.on_snapshot(snapshot())
    assert m.standing("L1") == NOT_BIDDING
    assert m.rows["L1"].next_bid_fen() == START  # no bid yet: the start price
    assert m.countdown(m.rows["L1"]) == "ends in 0:01:28"
    bid = m.bid_increment()
    assert bid is not None and bid.amount_fen == START
    m.on_ack(ack(bid.client_seq, seq=10))
    m.on_event(bid_event(10, "0001", START))
    assert m.standing("L1") == LEADING
    assert m.rows["L1"].next_bid_fen() == START + INC
    m.on_event(bid_event(11, "0002", START + INC, 2))
    assert m.standing("L1") == OUTBID
    m.on_snapshot(snapshot(price=START, leader="0001", seq=10))  # stale: ignored
    assert m.standing("L1") == OUTBID and m.rows["L1"].price_fen == START + INC


def test_code_learned_from_own_accepted_bid(tmp_path: Path) -> None:
    """Registered after connecting: hello had no code, the ack + event name it."""
    m = make_model(tmp_path)
    m.on_connected(hello({}), "ws://x")
    m.on_snapshot(snapshot())
    bid = m.place("L1", START)
    m.on_event(bid_event(7, "0003", START))  # the event may come before the ack
    m.on_ack(ack(bid.client_seq, seq=7))
    assert m.codes["L1"] == "0003" and m.standing("L1") == LEADING


def test_ack_writes_receipt_and_clears_pending(tmp_path: Path) -> None:
    m = make_model(tmp_path)
    m.on_connected(hello(), "ws://x")
    bid = m.place("L1", START)
    assert m.take_unsent() == [bid.frame] and m.take_unsent() == []
    m.on_ack(ack(bid.client_seq, seq=10))
    rows = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert rows == [
        {
            "seq": 10,
            "entry_hash": "ab" * 32,
            "ts_ns": NOW,
            "receipt": "cd" * 40,
            "proof": ["ef" * 32],
            "lot": "L1",
            "amount_fen": START,
            "client_seq": bid.client_seq,
        }
    ]
    assert not m.pending and not SeqStore(tmp_path / "k.state.json").pending
    m.on_ack(ack(bid.client_seq, seq=10, retried=True))  # a late duplicate: ignored
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 1


def test_refusal_is_shown_in_words(tmp_path: Path) -> None:
    m = make_model(tmp_path)
    m.on_connected(hello(), "ws://x")
    m.command("b 1")
    (cs,) = m.pending
    m.on_error(p.Error(cs, 404, "bid_below_increment", "", 12))
    assert not m.pending
    assert "✗ L1 ¥1.00 refused: bid_below_increment (404): 出价低于加价幅度" in m.messages[-1]
    m.command("b 1.234")
    assert "not a positive amount" in m.messages[-1] and not m.pending


def test_resend_after_drop_uses_same_client_seq_and_frame(tmp_path: Path) -> None:
    m = make_model(tmp_path)
    m.on_connected(hello(), "ws://x")
    first = m.place("L1", START)
    sent = m.take_unsent()
    m.on_disconnected("reset", 1.0)
    queued = m.place("L1", START + INC)  # placed while down: waits, never lost
    assert "queued until reconnected" in m.messages[-1]
    m.on_connected(hello(), "ws://x")
    resent = m.take_unsent()
    assert resent == [first.frame, queued.frame]  # oldest first, byte for byte
    assert resent[0] == sent[0]
    m.on_ack(ack(first.client_seq, 10, retried=True))
    assert "answer to a retry" in m.messages[-1]


def test_client_seq_strictly_increases_across_restarts(tmp_path: Path) -> None:
    m = make_model(tmp_path)
    m.on_connected(hello(), "ws://x")
    a = m.place("L1", START).client_seq
    b = m.place("L1", START + INC).client_seq
    assert 1000 <= a < b
    again = make_model(tmp_path)  # a restart: same state file, clock went backwards
    assert sorted(again.pending) == [a, b]  # unacknowledged bids survive the restart
    again.on_connected(hello(), "ws://x")
    assert len(again.take_unsent()) == 2
    assert again.place("L1", START + 2 * INC).client_seq > b
    wall = SeqStore(tmp_path / "other.json", now_us=lambda: 5_000_000)
    assert wall.allocate() == 5_000_000  # a lost state file cannot rewind it


def test_commands_select_and_quit(tmp_path: Path) -> None:
    m = make_model(tmp_path, ("L1", "L2", "L3"))
    m.command("3")
    assert m.selected_lot() == "L3"
    m.move(1)
    assert m.selected_lot() == "L1"
    m.command("9")
    assert "no lot number 9" in m.messages[-1]
    m.command("")  # Enter on an empty line: a bid, but no data yet
    assert "no lot data yet" in m.messages[-1] and not m.pending
    m.command("zz")
    assert "unknown command" in m.messages[-1]
    m.command("q")
    assert m.quit


def test_subscriptions_default_to_registered_lots(tmp_path: Path) -> None:
    m = make_model(tmp_path, ())
    assert m.subscriptions() == ["*"]
    m.on_connected(hello({"L9": "0002"}), "ws://x")
    assert m.subscriptions() == ["L9"] and m.order() == ["L9"]
