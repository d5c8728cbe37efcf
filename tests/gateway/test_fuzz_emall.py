"""Fuzzing the e-mall frames (``order``, ``create_item``, ``set_item_session``,
``set_purchase_limit``) over real connections, with the machinery of
``test_fuzz``: every frame gets exactly its predicted typed answer; a watcher's
storm never reaches the engine; a trader's storm leaves the views' depth equal
to the engine's book."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from gateway.wire import protocol as p
from gateway.wire import ws
from tests.gateway.conftest import (
    Bidder,
    connect_staff,
    next_staff_seq,
    register_bidder_key,
    signed_query,
    staff_ok,
    wait_for,
)
from tests.gateway.test_fuzz import Conn, _ping, frames_strategy, predict

pytestmark = pytest.mark.timeout(150)


ORDER_FIELDS = st.tuples(
    st.sampled_from(["place", "place", "place", "cancel", "amend", "purchase"]),
    st.sampled_from(["buy", "sell"]),
    st.sampled_from(["limit", "limit", "ioc", "fok"]),
    st.integers(990, 1010),
    st.integers(1, 5),
    st.integers(1, 40),
)


def _order(b: Bidder, cs: int, fields: tuple[Any, ...]) -> dict[str, Any]:
    action, side, kind, price, qty, order_id = fields
    payload = p.OrderPayload(
        p.ORDER_DOMAIN, action, "E1", b.key_id, cs, side, kind, price, qty, order_id
    )
    return json.loads(p.order_frame(b.key, payload))


def _bases(b: Bidder, cs: int, fields: tuple[Any, ...]) -> list[dict[str, Any]]:
    return [
        _order(b, cs, fields),
        {"type": "subscribe", "lots": ["E1"]},
        {"type": "create_item", "client_seq": 1, "item": "E2", "title": "t", "band_fen": 5},
        {"type": "set_item_session", "client_seq": 2, "item": "E1", "session": "halted"},
        {"type": "set_purchase_limit", "client_seq": 3, "item": "E1", "bidder": "b", "qty": 2},
    ]


async def _setup(nursery, server) -> Bidder:
    staff = await connect_staff(nursery, server)
    b = await register_bidder_key(staff, "trader-0")
    await staff_ok(staff, p.CreateItemFrame(next_staff_seq(), "E1", "item", 1_000, 0, 0, "open"))
    return b


async def test_fuzz_emall_watcher(nursery, server):
    b = await _setup(nursery, server)
    gw = server.gateway
    sock = await ws.connect(nursery, server.ws_url)
    assert isinstance(p.decode_server(await sock.receive()), p.Hello)
    conn = Conn(sock)
    state_before = gw.rt.router.state_hash()
    token = trio.lowlevel.current_trio_token()
    bases = _bases(b, 1, ("place", "buy", "limit", 1000, 1, 1))

    @settings(
        max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(frames_strategy(bases))
    def check(frames):
        got = trio.from_thread.run(conn.exchange, frames, trio_token=token)
        observed = [e for e in (predict(f, "watcher") for f in frames) if e != "sub"]
        actual = []
        for frame in got:
            if isinstance(frame, p.Error):
                if frame.name != "rate_limited":
                    actual.append(f"error:{frame.name}")
            elif isinstance(frame, p.Pong):
                actual.append(f"pong:{frame.t}")
            else:
                actual.append(f"unexpected:{type(frame).__name__}")
        assert actual == observed, (frames, observed, actual)

    await trio.to_thread.run_sync(check)
    assert await _ping(conn)
    assert gw.rt.router.state_hash() == state_before


async def test_fuzz_emall_trader(nursery, server):
    b = await _setup(nursery, server)
    gw = server.gateway
    sock = await ws.connect(nursery, f"{server.ws_url}?{signed_query(b.key, b.key_id)}")
    assert isinstance(p.decode_server(await sock.receive()), p.Hello)
    conn = Conn(sock)
    token = trio.lowlevel.current_trio_token()

    # Generation only: each example draws fresh signed frames (new client_seqs), which a
    # replay could not reproduce -- a failure is reported as found, not shrunk.
    @settings(
        max_examples=80,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.generate,),
    )
    @given(st.data())
    def check(data):
        # Every varying part is drawn (the client_seq has a fixed width), so the
        # strategy's shape never depends on state outside Hypothesis.
        fields = data.draw(ORDER_FIELDS)
        frames = data.draw(frames_strategy(_bases(b, 1_000_000 + b.next_seq(), fields)))
        expected = [predict(f, "bidder") for f in frames]
        n_replies = sum(1 for e in expected if e != "sub" and not e.startswith("pong"))
        got = trio.from_thread.run(conn.exchange, frames, trio_token=token)

        def is_reply(f) -> bool:
            if isinstance(f, p.Error) and f.message == "too many subscriptions":
                return False
            return isinstance(f, p.Ack | p.Error)

        replies = [f for f in got if is_reply(f)]

        async def rest():
            with trio.fail_after(30):
                while len(replies) < n_replies:
                    frame = p.decode_server(await sock.receive())
                    if is_reply(frame):
                        replies.append(frame)

        trio.from_thread.run(rest, trio_token=token)
        assert len(replies) == n_replies, (frames, expected, replies)
        for f in replies:
            if isinstance(f, p.Error):
                assert f.name == p.error_name(f.code)

    await trio.to_thread.run_sync(check)
    assert await _ping(conn)
    # everything durable is in the views: their depth equals the engine's book
    await wait_for(lambda: gw.rt.durable_seq >= gw.rt.router.applied)
    book = gw.rt.router.state.items["E1"].book.depth(1000)
    bids, asks = gw.views.items.items["E1"].depth(1000)
    assert (bids, asks) == (book.bids, book.asks)
