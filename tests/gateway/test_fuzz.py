"""T9: hypothesis-generated frames over real connections.

Hypothesis runs its (synchronous) examples in a worker thread; each example
drives the real connection on the trio loop through ``trio.from_thread``.
Every frame's outcome is predicted from the shared decoder: the server must
answer each one, in order, with exactly that typed error (or a pong / nothing
for a valid subscribe/unsubscribe/ping), never crash, and -- on a watcher
connection -- never change the engine's state.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.wire import protocol as p
from gateway.wire import ws
from tests.gateway.conftest import Bidder, connect_staff, lot_with_bidders, signed_query

pytestmark = pytest.mark.timeout(150)

FRAMES_PER_EXAMPLE = 5
COUNTS: dict[str, int] = {"watcher": 0, "bidder": 0}
SYNC_BASE = 2**62
REST_TIMEOUT = 10

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
)
json_value = st.recursive(
    json_leaf,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
TAGS = [
    "place_bid",
    "subscribe",
    "unsubscribe",
    "ping",
    "create_lot",
    "publish_lot",
    "set_reserve",
    "change_increment",
    "freeze_lot",
    "resume_lot",
    "terminate_lot",
    "register_key",
    "register_bidder",
    "confirm_deposit",
    "order",
    "create_item",
    "set_item_session",
    "set_purchase_limit",
    "sealed",
    "commit_draw_seed",
    "reveal_draw_seed",
    "finalize_evaluation",
    "confirm_payment",
    "declare_default",
    "qualify_winner",
    "create_reauction",
    "handle_alert",
    "answer_complaint",
    "refund_deposit",
    "commit_expert_draw",
    "reveal_expert_draw",
    "hello",
    "ack",
    "error",
    "snapshot",
    "book",
    "event",
    "pong",
]


def _valid_frames(b: Bidder) -> list[dict[str, Any]]:
    bid = json.loads(p.bid_frame(b.key, b.key_id, "F1", 10_000, 1))
    return [
        bid,
        {"type": "subscribe", "lots": ["F1"]},
        {"type": "unsubscribe", "lots": ["F1", "*"]},
        {"type": "ping", "t": 7},
        {
            "type": "create_lot",
            "client_seq": 1,
            "lot": "X",
            "mechanism": "english",
            "title": "t",
            "start_price_fen": 100,
            "increment_fen": 10,
            "start_ns": 0,
            "end_ns": 10,
        },
        {"type": "publish_lot", "client_seq": 2, "lot": "F1"},
        {"type": "set_reserve", "client_seq": 3, "lot": "F1", "reserve_fen": 10},
        {
            "type": "change_increment",
            "client_seq": 4,
            "lot": "F1",
            "increment_fen": 10,
            "phase": "timed",
        },
        {"type": "freeze_lot", "client_seq": 5, "lot": "F1", "reason": "r"},
        {"type": "resume_lot", "client_seq": 6, "lot": "F1", "reason": "r"},
        {"type": "terminate_lot", "client_seq": 7, "lot": "F1", "reason": "r"},
        {
            "type": "register_key",
            "client_seq": 8,
            "key": "k",
            "bidder": "b",
            "public_key_hex": "00" * 32,
        },
        {"type": "register_bidder", "client_seq": 9, "lot": "F1", "bidder": "b"},
        {"type": "confirm_deposit", "client_seq": 10, "lot": "F1", "bidder": "b", "amount_fen": 0},
        *_procurement_frames(b),
    ]


def _procurement_frames(b: Bidder) -> list[dict[str, Any]]:
    """Draws, evaluation, VBP and settlement: signed actions and staff frames."""
    signed = [
        json.loads(
            p.sealed_frame(b.key, p.SealedPayload(p.SEALED_DOMAIN, action, "F1", b.key_id, 1, **kw))
        )  # type: ignore[arg-type]
        for action, kw in (
            ("accept_revival", {}),
            ("choose_regions", {"regions": ("beijing", "hebei")}),
            ("enter_scores", {"bidder_code": "0001", "points_centi": 5_000}),
            ("complaint", {"complaint_id": "c1", "text": "why"}),
        )
    ]
    return [
        *signed,
        {"type": "commit_draw_seed", "client_seq": 11, "lot": "F1", "seed_hash": "ab" * 32},
        {"type": "reveal_draw_seed", "client_seq": 12, "lot": "F1", "seed_hex": "cd" * 16},
        {"type": "finalize_evaluation", "client_seq": 13, "lot": "F1"},
        {
            "type": "handle_alert",
            "client_seq": 18,
            "lot": "F1",
            "alert_key": "k",
            "action": "dismiss",
        },
        {"type": "answer_complaint", "client_seq": 19, "complaint_id": "c1", "step": "answer"},
        {"type": "refund_deposit", "client_seq": 20, "lot": "F1", "bidder": "b", "amount_fen": 0},
        {
            "type": "commit_expert_draw",
            "client_seq": 21,
            "draw_id": "d1",
            "lot": "F1",
            "seed_hash": "ab" * 32,
            "pool_hash": "cd" * 32,
        },
        {
            "type": "reveal_expert_draw",
            "client_seq": 22,
            "draw_id": "d1",
            "seed_hex": "ef" * 16,
            "drawn_hash": "01" * 32,
        },
        {"type": "confirm_payment", "client_seq": 14, "lot": "F1"},
        {"type": "declare_default", "client_seq": 15, "lot": "F1", "reason": "r"},
        {"type": "qualify_winner", "client_seq": 16, "lot": "F1", "passed": False, "reason": "r"},
        {
            "type": "create_reauction",
            "client_seq": 17,
            "lot": "F2",
            "parent_lot": "F1",
            "stage": "second",
            "start_price_fen": 80,
            "start_ns": 0,
            "end_ns": 10,
        },
    ]


@st.composite
def mutated(draw, bases: list[dict[str, Any]]) -> str | bytes:
    frame = dict(draw(st.sampled_from(bases)))
    op = draw(
        st.sampled_from(
            ["keep", "drop", "add", "retype", "tag", "truncate", "bytes", "payload", "sig", "big"]
        )
    )
    keys = sorted(frame)
    if op == "drop":
        frame.pop(draw(st.sampled_from(keys)))
    elif op == "add":
        frame[draw(st.text(min_size=1, max_size=10))] = draw(json_value)
    elif op == "retype":
        frame[draw(st.sampled_from(keys))] = draw(json_value)
    elif op == "tag":
        frame["type"] = draw(st.sampled_from(TAGS) | st.text(max_size=12) | json_leaf)
    elif op == "payload" and "payload" in frame:
        payload = json.loads(frame["payload"])
        k = draw(st.sampled_from(sorted(payload)))
        payload[k] = draw(json_value)
        frame["payload"] = json.dumps(payload)
    elif op == "sig" and "sig" in frame:
        frame["sig"] = draw(st.sampled_from(["", "zz", "00" * 64, frame["sig"][::-1]]))
    text = json.dumps(frame)
    if op == "truncate":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    if op == "bytes":
        return draw(st.binary(max_size=64)) if draw(st.booleans()) else text.encode()
    if op == "big":
        frame["pad"] = "x" * draw(st.integers(p.MAX_FRAME_BYTES, 2 * p.MAX_FRAME_BYTES))
        return json.dumps(frame)
    return text


def frames_strategy(bases):
    one = (
        json_value.map(json.dumps)
        | mutated(bases)
        | st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
        | st.binary(max_size=40)
    )
    return st.lists(one, min_size=FRAMES_PER_EXAMPLE, max_size=FRAMES_PER_EXAMPLE)


def predict(frame: str | bytes, role: str) -> str | None:
    """'error:<name>' | 'pong:<t>' | 'sub' (no reply, maybe rate_limited) | 'reply' (bidder)."""
    if isinstance(frame, bytes):
        return "error:malformed_json"
    try:
        decoded = p.decode_client(frame)
    except p.FrameError as e:
        return f"error:{e.code.name}"
    if isinstance(decoded, p.Ping):
        return f"pong:{decoded.t}"
    if isinstance(decoded, p.Subscribe | p.Unsubscribe):
        return "sub"
    if role == "watcher":
        return "error:not_authorized"
    return "reply"  # bidder: a bid (ack / typed error) or a refused staff frame


class Conn:
    def __init__(self, sock: ws.Socket) -> None:
        self.sock = sock
        self.sync_t = 0

    async def exchange(self, frames: list[str | bytes]) -> list[p.ServerFrame]:
        """Send the frames and a trailing ping; everything answered before its pong."""
        for f in frames:
            if isinstance(f, bytes):
                await self.sock._raw.send_message(f)
            else:
                await self.sock.send(f)
        self.sync_t += 1
        t = SYNC_BASE + self.sync_t
        await self.sock.send(p.encode_text(p.Ping(t)))
        got: list[p.ServerFrame] = []
        with trio.fail_after(10):
            while True:
                frame = p.decode_server(await self.sock.receive())
                if isinstance(frame, p.Pong) and frame.t == t:
                    return got
                if not isinstance(frame, p.LotSnapshot | p.BookSnapshot):
                    got.append(frame)


async def _setup(nursery, server):
    staff = await connect_staff(nursery, server)
    bidders = await lot_with_bidders(staff, "F1", 2)
    return bidders


async def test_fuzz_watcher_connection(nursery, server):
    bidders = await _setup(nursery, server)
    gw = server.gateway
    sock = await ws.connect(nursery, server.ws_url)
    assert isinstance(p.decode_server(await sock.receive()), p.Hello)
    conn = Conn(sock)
    state_before = gw.rt.router.state_hash()
    applied_before = gw.rt.router.applied
    token = trio.lowlevel.current_trio_token()
    problems: list[Any] = []
    bases = _valid_frames(bidders[0])

    @settings(
        max_examples=2000, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(frames_strategy(bases))
    def check(frames):
        got = trio.from_thread.run(conn.exchange, frames, trio_token=token)
        COUNTS["watcher"] += len(frames)
        expected = [predict(f, "watcher") for f in frames]
        it = iter(got)
        observed = []
        for exp in expected:
            if exp == "sub":
                continue
            observed.append(exp)
        actual = []
        for frame in got:
            if isinstance(frame, p.Error):
                assert frame.name == p.error_name(frame.code)
                if frame.name == "rate_limited":  # too many subscriptions: allowed
                    continue
                actual.append(f"error:{frame.name}")
            elif isinstance(frame, p.Pong):
                actual.append(f"pong:{frame.t}")
            else:
                actual.append(f"unexpected:{type(frame).__name__}")
        del it
        if actual != observed:
            problems.append((frames, observed, actual))
        assert actual == observed, (frames, observed, actual)

    await trio.to_thread.run_sync(check)
    assert not problems
    # still alive and answering; nothing reached the engine
    assert await _ping(conn)
    assert gw.rt.router.state_hash() == state_before
    assert gw.rt.router.applied == applied_before
    print(f"fuzz(watcher): {COUNTS['watcher']} frames")
    assert COUNTS["watcher"] >= 10_000


async def test_fuzz_bidder_connection(nursery, server):
    bidders = await _setup(nursery, server)
    b = bidders[0]
    gw = server.gateway
    sock = await ws.connect(nursery, f"{server.ws_url}?{signed_query(b.key, b.key_id)}")
    assert isinstance(p.decode_server(await sock.receive()), p.Hello)
    conn = Conn(sock)
    token = trio.lowlevel.current_trio_token()
    rng = random.Random(1)

    def bases_now() -> list[dict[str, Any]]:
        # fresh, valid signed bids with new client_seqs
        cs = b.next_seq()
        amount = 10_000 + 100 * rng.randrange(0, 50)
        bid = json.loads(p.bid_frame(b.key, b.key_id, "F1", amount, cs))
        return [bid, *_valid_frames(b)[1:]]

    outstanding: dict[str, int] = {"replies": 0}

    @settings(
        max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.data())
    def check(data):
        frames = data.draw(frames_strategy(bases_now()))
        expected = [predict(f, "bidder") for f in frames]
        n_replies = sum(1 for e in expected if e != "sub" and not e.startswith("pong"))
        got = trio.from_thread.run(conn.exchange, frames, trio_token=token)
        COUNTS["bidder"] += len(frames)

        def is_reply(f) -> bool:
            if isinstance(f, p.Error) and f.message == "too many subscriptions":
                return False
            return isinstance(f, p.Ack | p.Error)

        replies = [f for f in got if is_reply(f)]

        async def rest():
            with trio.fail_after(REST_TIMEOUT):
                while len(replies) < n_replies:
                    frame = p.decode_server(await sock.receive())
                    if is_reply(frame):
                        replies.append(frame)

        try:
            trio.from_thread.run(rest, trio_token=token)
        except trio.TooSlowError:
            raise AssertionError(("missing replies", frames, expected, replies)) from None
        assert len(replies) == n_replies, (frames, expected, replies)
        for f in replies:
            if isinstance(f, p.Error):
                assert f.name == p.error_name(f.code)
        outstanding["replies"] += len(replies)

    await trio.to_thread.run_sync(check)
    ack = await _ping(conn)
    assert ack
    # the ledger, engine and views agree after the storm of mixed frames
    assert gw.views.lots["F1"].bid_count == gw.rt.router.state.lots["F1"].bid_count
    print(f"fuzz(bidder): {COUNTS['bidder']} frames")


async def _ping(conn: Conn) -> bool:
    got = await conn.exchange([p.encode_text(p.Ping(5))])
    return any(isinstance(f, p.Pong) and f.t == 5 for f in got)
