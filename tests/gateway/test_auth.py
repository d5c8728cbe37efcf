"""Handshake authentication (before accept) and the authorisation matrix (T12)."""

from __future__ import annotations

import json
import secrets
import time

import pytest
import trio
import trio_websocket
from nacl.signing import SigningKey

from gateway.clients.tclient import Client
from gateway.wire import protocol as p
from gateway.wire import ws
from gateway.wire.protocol import GatewayError as G
from tests.gateway.conftest import (
    SECOND,
    STAFF_TOKEN,
    Bidder,
    connect_bidder,
    connect_staff,
    connect_supervisor,
    connect_watcher,
    create_lot,
    fund,
    lot_with_bidders,
    next_staff_seq,
    register_bidder_key,
    signed_query,
    staff_ok,
    wait_for,
)
from tests.gateway.helpers import sync

pytestmark = pytest.mark.timeout(90)


# ----------------------------------------------------------------- handshake


async def _rejected(url: str, headers=None) -> trio_websocket.ConnectionRejected:
    extra = [(k.encode(), v.encode()) for k, v in (headers or [])]
    with trio.fail_after(10):
        with pytest.raises(trio_websocket.ConnectionRejected) as info:
            async with trio_websocket.open_websocket_url(url, extra_headers=extra) as conn:
                # never reached: nothing (no hello) may flow before accept
                raise AssertionError(f"accepted, got {await conn.get_message()!r}")
    return info.value


@pytest.fixture
async def keyed(nursery, server):
    staff = await connect_staff(nursery, server)
    b = await register_bidder_key(staff, "hs-bidder")
    return server, b


async def test_valid_handshake_gets_hello(nursery, keyed):
    server, b = keyed
    client = await connect_bidder(nursery, server, b)
    assert client.hello.role == "bidder" and client.hello.identity == b.key_id


async def test_bad_signature_401(keyed):
    server, b = keyed
    other = SigningKey.generate()
    rej = await _rejected(f"{server.ws_url}?{signed_query(other, b.key_id)}")
    assert rej.status_code == 401 and rej.body == b"authentication failed"
    q = signed_query(b.key, b.key_id).replace("sig=", "sig=00")
    assert (await _rejected(f"{server.ws_url}?{q}")).status_code == 401
    q = signed_query(b.key, b.key_id).replace("sig=", "sig=zz")
    assert (await _rejected(f"{server.ws_url}?{q}")).status_code == 401


@pytest.mark.parametrize("skew_s", [-31, +31, -3600, +3600])
async def test_stale_or_future_ts_401(keyed, skew_s):
    server, b = keyed
    ts = int((time.time() + skew_s) * 1000)
    rej = await _rejected(f"{server.ws_url}?{signed_query(b.key, b.key_id, ts)}")
    assert rej.status_code == 401 and rej.body == b"authentication failed"


async def test_ts_in_seconds_not_ms_is_stale(keyed):
    server, b = keyed
    rej = await _rejected(f"{server.ws_url}?{signed_query(b.key, b.key_id, int(time.time()))}")
    assert rej.status_code == 401


async def test_reused_nonce_401(nursery, keyed):
    server, b = keyed
    nonce = secrets.token_hex(12)
    ts = int(time.time() * 1000)
    q = signed_query(b.key, b.key_id, ts, nonce)
    sock = await ws.connect(nursery, f"{server.ws_url}?{q}")
    assert isinstance(p.decode_server(await sock.receive()), p.Hello)
    rej = await _rejected(f"{server.ws_url}?{q}")  # exact replay of the upgrade
    assert rej.status_code == 401 and rej.body == b"authentication failed"
    q2 = signed_query(b.key, b.key_id, ts + 1000, nonce)  # same nonce, new ts
    assert (await _rejected(f"{server.ws_url}?{q2}")).status_code == 401


async def test_short_nonce_401(keyed):
    server, b = keyed
    q = signed_query(b.key, b.key_id, None, "abc")
    assert (await _rejected(f"{server.ws_url}?{q}")).status_code == 401


async def test_unknown_key_401(keyed):
    server, _b = keyed
    k = SigningKey.generate()
    rej = await _rejected(f"{server.ws_url}?{signed_query(k, 'no-such-key')}")
    assert rej.status_code == 401 and rej.body == b"authentication failed"


@pytest.mark.parametrize("token", ["nope", f"{STAFF_TOKEN}x", "dev-staff-toke", "x" * 300])
async def test_unknown_token_401(server, token):
    rej = await _rejected(server.ws_url, [("Authorization", f"Bearer {token}")])
    assert rej.status_code == 401 and rej.body == b"authentication failed"


async def test_token_in_url_refused(server):
    """Tokens never travel in URLs (proxies and logs keep them): even a right one."""
    rej = await _rejected(f"{server.ws_url}?token={STAFF_TOKEN}")
    assert rej.status_code == 401 and rej.body == b"authentication failed"


async def test_unknown_cookie_token_401(server):
    rej = await _rejected(server.ws_url, [("Cookie", "pubex_token=bogus")])
    assert rej.status_code == 401


async def test_cookie_token_staff(nursery, server):
    c = await Client.connect(
        nursery, server.ws_url, headers=[("Cookie", f"pubex_token={STAFF_TOKEN}")]
    )
    assert c.hello.role == "staff" and c.hello.identity == "staff-01"


async def test_rejections_leave_no_connection(keyed):
    server, b = keyed
    before = len(server.gateway.connections)
    for _ in range(5):
        await _rejected(server.ws_url, [("Authorization", "Bearer nope")])
        await _rejected(f"{server.ws_url}?{signed_query(SigningKey.generate(), b.key_id)}")
    assert len(server.gateway.connections) == before


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "null", "http://127.0.0.1", "https://127.0.0.1:1"]
)
async def test_foreign_origin_403(server, origin):
    rej = await _rejected(server.ws_url, [("Origin", origin)])
    assert rej.status_code == 403
    rej = await _rejected(
        server.ws_url, [("Origin", origin), ("Authorization", f"Bearer {STAFF_TOKEN}")]
    )
    assert rej.status_code == 403


async def test_console_origin_allowed(nursery, server):
    port = server.http_url.rstrip("/").rsplit(":", 1)[1]
    for origin in (server.origin, f"http://localhost:{port}"):
        c = await Client.connect(
            nursery, server.ws_url, token=STAFF_TOKEN, headers=[("Origin", origin)]
        )
        assert c.hello.role == "staff"
        w = await Client.connect(nursery, server.ws_url, headers=[("Origin", origin)])
        assert w.hello.role == "watcher"


async def test_supervisor_token(nursery, server):
    c = await connect_supervisor(nursery, server)
    assert c.hello.role == "supervisor" and c.hello.identity == "supervisor-01"


async def test_watchers_disallowed_401(server_factory):
    srv = await server_factory({"auth.watchers_allowed": False})
    assert (await _rejected(srv.ws_url)).status_code == 401


# ---------------------------------------------------------------- the matrix

COMMANDS = [
    "place_bid",
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
    "subscribe",
    "sealed",
    "commit_draw_seed",
    "finalize_evaluation",
    "qualify_winner",
    "confirm_payment",
    "declare_default",
    "create_reauction",
]
ROLES = ["bidder", "staff", "supervisor", "watcher"]
STATES = ["open", "frozen", "closed"]
MATRIX_COUNT = {"tried": 0}


def _expected_allowed(role: str, cmd: str) -> bool:
    if cmd == "subscribe":
        return True
    if cmd in ("place_bid", "sealed"):
        return role == "bidder"
    return role == "staff"


async def _outcome(client: Client, cs: int, text: str, lot: str, is_subscribe: bool) -> str:
    """'allowed' | 'refused' (not_authorized) | 'other:<name>' (a business outcome)."""
    n = len(client.anonymous_errors)
    client.replies.pop(cs, None)
    await client.send_text(text)
    if is_subscribe:
        await sync(client)
        if len(client.anonymous_errors) > n:
            return f"refused:{client.anonymous_errors[-1].name}"
        with trio.fail_after(5):
            while lot not in client.snapshots:
                await client.changed.wait()
        return "allowed"
    with trio.fail_after(10):
        while cs not in client.replies and len(client.anonymous_errors) == n:
            assert not client.closed
            await client.changed.wait()
    reply = client.replies.get(cs) or client.anonymous_errors[-1]
    if isinstance(reply, p.Error) and reply.code in (G.not_authorized, 101):
        return "refused"
    return "allowed"


async def test_authorisation_matrix(nursery, server):
    staff = await connect_staff(nursery, server)
    owner = await register_bidder_key(staff, "matrix-bidder")
    lots: dict[tuple[str, str], str] = {}
    # closed lots first (they need ~2 s to run out), with no bids: they close unsold
    for cmd in COMMANDS:
        lot = lots["closed", cmd] = f"closed-{cmd}"
        await create_lot(staff, lot, duration_ns=2 * SECOND)
        await fund(staff, lot, owner.bidder_id)
    for state in ("open", "frozen"):
        for cmd in COMMANDS:
            lot = lots[state, cmd] = f"{state}-{cmd}"
            await create_lot(staff, lot)
            await fund(staff, lot, owner.bidder_id)
            if state == "frozen":
                await staff_ok(staff, p.FreezeLotFrame(next_staff_seq(), lot, "matrix"))
    # the closed lots' timers fire while the others are created: wait for their closes
    await wait_for(
        lambda: all(
            server.gateway.views.lots[lots["closed", c]].status in ("unsold", "sold")
            for c in COMMANDS
        ),
        timeout=12,
    )

    clients = {
        "bidder": await connect_bidder(nursery, server, owner),
        "staff": staff,
        "supervisor": await connect_supervisor(nursery, server),
        "watcher": await connect_watcher(nursery, server),
    }
    mismatches = []
    tried = 0
    extra_key = iter(range(10**6))
    for state in STATES:
        for cmd in COMMANDS:
            lot = lots[state, cmd]
            for role in ROLES:
                client = clients[role]
                cs = next_staff_seq() if role != "bidder" else owner.next_seq()
                text = _frame_text(cmd, cs, lot, owner, role, state, next(extra_key))
                # another role sending the owner's signed frame: its refusal names
                # the payload's client_seq (1), which it could read
                signed_by_owner = cmd in ("place_bid", "sealed") and role != "bidder"
                reply_cs = 1 if signed_by_owner else cs
                got = await _outcome(client, reply_cs, text, lot, cmd == "subscribe")
                expected = "allowed" if _expected_allowed(role, cmd) else "refused"
                tried += 1
                if got != expected:
                    mismatches.append((role, cmd, state, got))
    MATRIX_COUNT["tried"] = tried
    print(f"authorisation matrix: {tried} combinations, {len(mismatches)} mismatches")
    assert tried == len(ROLES) * len(COMMANDS) * len(STATES) == 228
    assert mismatches == [], mismatches


def _frame_text(cmd: str, cs: int, lot: str, owner: Bidder, role: str, state: str, n: int) -> str:
    now = time.time_ns()
    if cmd == "place_bid":
        # the owner's own, correctly signed bid -- sent by whichever role
        return p.bid_frame(owner.key, owner.key_id, lot, 10_000, cs if role == "bidder" else 1)
    if cmd == "subscribe":
        return p.encode_text(p.Subscribe([lot]))
    if cmd == "sealed":  # the owner's own signed non-bid action, sent by whichever role
        payload = p.SealedPayload(
            p.SEALED_DOMAIN, "accept_revival", lot, owner.key_id, cs if role == "bidder" else 1
        )
        return p.sealed_frame(owner.key, payload)
    frame = {
        "create_lot": lambda: p.CreateLotFrame(
            cs, f"new-{role}-{state}-{n}", "english", "t", 10_000, 100, now, now + 7200 * SECOND
        ),
        "publish_lot": lambda: p.PublishLotFrame(cs, lot),
        "set_reserve": lambda: p.SetReserveFrame(cs, lot, 50_000),
        "change_increment": lambda: p.ChangeIncrementFrame(cs, lot, 200),
        "freeze_lot": lambda: p.FreezeLotFrame(cs, lot, "x"),
        "resume_lot": lambda: p.ResumeLotFrame(cs, lot, "x"),
        "terminate_lot": lambda: p.TerminateLotFrame(cs, lot, "x"),
        "register_key": lambda: p.RegisterKeyFrame(
            cs, f"mk-{role}-{n}", f"mb-{role}-{n}", bytes(SigningKey.generate().verify_key).hex()
        ),
        "register_bidder": lambda: p.RegisterBidderFrame(cs, lot, f"rb-{role}-{n}"),
        "confirm_deposit": lambda: p.ConfirmDepositFrame(cs, lot, owner.bidder_id, 0),
        "commit_draw_seed": lambda: p.CommitDrawSeedFrame(cs, lot, "ab" * 32),
        "finalize_evaluation": lambda: p.FinalizeEvaluationFrame(cs, lot),
        "qualify_winner": lambda: p.QualifyWinnerFrame(cs, lot, True),
        "confirm_payment": lambda: p.ConfirmPaymentFrame(cs, lot),
        "declare_default": lambda: p.DeclareDefaultFrame(cs, lot, "x"),
        "create_reauction": lambda: p.CreateReauctionFrame(
            cs, f"re-{role}-{state}-{n}", lot, "second", 9_000, now, now + 7200 * SECOND
        ),
    }[cmd]()
    return p.encode_text(frame)


# ------------------------------------------------------- no identity / reserve leaks

RESERVE = 987_654_300  # distinctive: must never reach a bidder or watcher before the close


def _capture(client: Client) -> list[str]:
    raw: list[str] = []
    inner = client.sock.receive

    async def receive():
        msg = await inner()
        raw.append(msg if isinstance(msg, str) else msg.decode("latin-1"))
        return msg

    client.sock.receive = receive  # the reader task has not run yet
    return raw


async def test_no_identity_or_reserve_leaks(nursery, server):
    staff = await connect_staff(nursery, server)
    bidders = await lot_with_bidders(staff, "LEAK", 3, prefix="ID-SECRET")
    watcher = await connect_watcher(nursery, server)
    w_raw = _capture(watcher)
    supervisor = await connect_supervisor(nursery, server)
    _capture(supervisor)
    await watcher.subscribe(["*"])
    await supervisor.subscribe(["LEAK"])
    conns = []
    for b in bidders:
        c = await connect_bidder(nursery, server, b)
        conns.append((b, c, _capture(c)))
        await c.subscribe(["LEAK", "*"])
    await staff_ok(staff, p.SetReserveFrame(next_staff_seq(), "LEAK", RESERVE))
    amount = 10_000
    for _rnd in range(4):
        for b, c, _ in conns:
            reply = await c.bid(b.key, b.key_id, "LEAK", amount, b.next_seq())
            assert isinstance(reply, p.Ack), reply
            amount += 100
        # a refusal too (its detail / code goes to the bidder only)
        b, c, _ = conns[0]
        reply = await c.bid(b.key, b.key_id, "LEAK", amount - 50, b.next_seq())
        assert isinstance(reply, p.Error)
    await staff_ok(staff, p.ChangeIncrementFrame(next_staff_seq(), "LEAK", 200))
    await staff_ok(staff, p.FreezeLotFrame(next_staff_seq(), "LEAK", "check"))
    await staff_ok(staff, p.ResumeLotFrame(next_staff_seq(), "LEAK", "ok"))
    # every watching connection holds a snapshot of the final price: the frames it was
    # sent (events and a conflated snapshot) are all in its capture
    last = amount - 100
    with trio.fail_after(10):
        for c in [watcher, *(c for _, c, _ in conns)]:
            while (s := c.snapshots.get("LEAK")) is None or s.price_fen != last:
                await c.changed.wait()
    for _, c, _ in conns:
        await sync(c)
    await sync(watcher)
    ids = [b.bidder_id for b in bidders]
    for b, _c, raw in conns:
        assert raw, "bidder received frames"
        text = "\n".join(raw)
        for other in bidders:
            assert other.bidder_id not in text, (b.bidder_id, other.bidder_id)
            if other is not b:
                assert other.key_id not in text
        assert str(RESERVE) not in text
        assert "ID-SECRET" not in text
        assert "bid_accepted" in text and "reserve_entered" in text
    for raw in (w_raw,):  # (a supervisor may see more; not asserted)
        text = "\n".join(raw)
        assert '"snapshot"' in text  # (public watchers may get snapshots only)
        assert str(RESERVE) not in text
        for i in ids:
            assert i not in text
    snap = watcher.snapshots["LEAK"]
    assert snap.has_reserve and snap.bid_count == 12
    assert json.dumps(snap.__struct_fields__)  # sanity
