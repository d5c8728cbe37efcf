"""Property tests: random command streams against invariants the rules name.

One hypothesis test drives a Router with random, mostly-plausible commands for a few
lots (English and listing, every preset in engine.rules.PRESETS), bidders with and
without priority rights, near-valid amounts, ticks, freezes, resumes, terminates,
outage suspensions and retries of earlier commands, at non-decreasing times.  After
every command it checks, from the events alone:

(a) the winner is the max by (price, better priority rank, earlier) of accepted bids;
(b) every accepted bid obeys the increment rule relative to the previous price;
(c) a lot's end time never moves earlier (freeze/terminate carry no end);
(d) no event carries a bidder identity, nor a reserve amount before the lot closed;
and at the end:
(e) replaying the msgpack-encoded commands on a fresh Router gives identical event
    bytes and state hash;
(f) a snapshot at a random point, restored, plus the tail == the full run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine.messages import (
    BidAccepted,
    BidderRegistered,
    BlacklistBidder,
    ChangeIncrement,
    Command,
    CommandRejected,
    ConfirmDeposit,
    CreateLot,
    Event,
    FreezeLot,
    IncrementChanged,
    LotCreated,
    LotExtended,
    LotOpened,
    LotPublished,
    LotResumed,
    LotSold,
    LotTerminated,
    LotUnsold,
    PhaseChanged,
    PlaceBid,
    PublishLot,
    RegisterBidder,
    ReserveEntered,
    ResumeLot,
    SetReserve,
    SuspendOverdue,
    TerminateLot,
    Tick,
    UnblacklistBidder,
    decode_command,
    encode_command,
    encode_events,
)
from engine.router import Router
from engine.rules import PRESETS
from tests.engine.helpers import HOUR, MIN, SERVICE, STAFF, SYSTEM, T0, S

BIDDERS: dict[str, int] = {  # identity -> priority rank (R-5.2.3(d): 1 best, 0 none)
    "ID-alice-7f": 0,
    "ID-bob-3c": 0,
    "ID-carol-9a": 0,
    "ID-pri1-01": 1,
    "ID-pri2-02": 2,
    "ID-pri2-03": 2,
}
RESERVES = (1313, 1777, 2323)  # odd, distinctive; bids never equal them (nudged below)
LOT_IDS = ("LA", "LB", "LC")
DTS = (0, 1, S, 20 * S, 20 * S, MIN, MIN, 3 * MIN, 5 * MIN, 15 * MIN, 30 * MIN, HOUR)
FINAL = (LotSold, LotUnsold, LotTerminated)


@dataclass
class LotModel:
    mechanism: str
    start_price: int
    inc: int
    timed_inc: int
    mode: str
    exact_start: bool
    phase: str = "pending"
    ranks: dict[str, int] = field(default_factory=dict)  # code -> rank
    accepted: list[tuple[int, int, int, str]] = field(default_factory=list)
    end: int = -1
    reserve: int = 0
    closed: bool = False


class Checker:
    """Event-only model of each lot; asserts invariants (a)-(d) as events stream in."""

    def __init__(self) -> None:
        self.lots: dict[str, LotModel] = {}
        self.pending_reserve: dict[str, int] = {}  # lot -> reserve of the SetReserve in flight

    def feed(self, cmd: Command, events: list[Event]) -> None:
        wire = msgspec.json.encode(events).decode()
        assert "ID-" not in wire, f"identity leaked: {wire}"  # (d) identities
        for ev in events:
            self._event(cmd, ev)

    def _event(self, cmd: Command, ev: Event) -> None:
        lot = self.lots.get(ev.lot_id)
        if isinstance(ev, LotCreated):
            self.lots[ev.lot_id] = LotModel(
                ev.mechanism,
                ev.start_price_fen,
                ev.increment_fen,
                ev.timed_increment_fen,
                ev.rules.increment_mode,
                ev.rules.first_bid_exact_start,
            )
            return
        if lot is None:
            return
        # (d) no reserve amount in any event of the lot before its close
        if lot.reserve and not lot.closed and not isinstance(ev, LotSold | LotUnsold):
            assert lot.reserve not in _ints(ev), f"reserve leaked before close: {ev}"
        if isinstance(ev, ReserveEntered):
            assert isinstance(cmd, SetReserve)
            lot.reserve = cmd.reserve_fen
        elif isinstance(ev, BidderRegistered):
            lot.ranks[ev.bidder_code] = ev.priority_rank
        elif isinstance(ev, IncrementChanged):
            if ev.phase == "timed":
                lot.timed_inc = ev.increment_fen
            else:
                lot.inc = ev.increment_fen
        elif isinstance(ev, LotOpened | PhaseChanged | LotResumed):
            lot.phase = ev.phase
            self._end(lot, ev.end_ns, ev)
        elif isinstance(ev, LotPublished | LotExtended):
            self._end(lot, ev.end_ns, ev)
        elif isinstance(ev, BidAccepted):
            self._bid(lot, ev)
        elif isinstance(ev, LotSold | LotUnsold | LotTerminated):
            assert not lot.closed, f"closed twice: {ev}"
            lot.closed = True
            if not isinstance(ev, LotTerminated):
                self._close(lot, ev)

    def _end(self, lot: LotModel, end: int, ev: Event) -> None:
        assert not lot.closed, f"{ev} after close"
        assert end >= lot.end, f"(c) end moved earlier: {lot.end} -> {ev}"  # (c)
        lot.end = end

    def _bid(self, lot: LotModel, ev: BidAccepted) -> None:  # (b)
        assert not lot.closed
        rank = lot.ranks[ev.bidder_code]
        inc = lot.timed_inc if lot.phase in ("timed", "wait") and lot.timed_inc else lot.inc
        amount = ev.amount_fen
        if not lot.accepted:
            assert amount >= lot.start_price
            assert not lot.exact_start or amount == lot.start_price
            assert lot.mode != "multiple" or (amount - lot.start_price) % inc == 0
            assert not ev.priority_match
        else:
            price, prev_rank, _, _ = lot.accepted[-1]
            if amount == price:
                assert ev.priority_match and rank, "equal price only for a priority holder"
                assert prev_rank == 0 or rank < prev_rank, "match needs a better rank"
            else:
                assert amount >= price + inc, (amount, price, inc)
                assert lot.mode != "multiple" or (amount - price) % inc == 0
        lot.accepted.append((amount, rank, len(lot.accepted), ev.bidder_code))

    def _close(self, lot: LotModel, ev: LotSold | LotUnsold) -> None:  # (a)
        assert ev.reserve_fen == lot.reserve
        if not lot.accepted:
            assert isinstance(ev, LotUnsold) and ev.reason == "no_bids"
            return
        best = max(lot.accepted, key=lambda b: (b[0], -(b[1] or 10**9), -b[2]))
        if best[0] >= lot.reserve:
            assert isinstance(ev, LotSold), ev
            assert (ev.bidder_code, ev.price_fen) == (best[3], best[0])
        else:
            assert isinstance(ev, LotUnsold) and ev.reason == "below_reserve"
            assert ev.price_fen == best[0]


def _ints(obj: Any) -> list[int]:
    out: list[int] = []
    for v in msgspec.to_builtins(obj, enc_hook=int).values():
        if isinstance(v, int) and not isinstance(v, bool):
            out.append(v)
        elif isinstance(v, dict):
            out.extend(x for x in v.values() if isinstance(x, int))
    return out


# ---------------------------------------------------------------------- driver
class Driver:
    def __init__(self, data: st.DataObject) -> None:
        self.d = data
        self.router = Router()
        self.now = T0
        self.seqs: dict[str, int] = {}
        self.log: list[tuple[Command, int, bytes]] = []
        self.checker = Checker()

    def draw(self, strat: st.SearchStrategy[Any]) -> Any:
        return self.d.draw(strat)

    def seq(self, origin: str) -> int:
        self.seqs[origin] = self.seqs.get(origin, 0) + 1
        return self.seqs[origin]

    def apply(self, cmd: Command) -> None:
        self.now += self.draw(st.sampled_from(DTS))
        events = self.router.apply(cmd, self.now)
        self.log.append((cmd, self.now, encode_events(events)))
        self.checker.feed(cmd, events)

    def lot_id(self) -> str:
        return self.draw(st.sampled_from(sorted(self.router.state.lots) or ["LZ"]))

    def create(self, lot_id: str) -> None:
        mech = self.draw(st.sampled_from(["english", "listing"]))
        rules = PRESETS[self.draw(st.sampled_from(sorted(PRESETS)))]
        start = self.now + self.draw(st.sampled_from([0, 0, 10 * MIN, HOUR]))
        end = start + self.draw(st.sampled_from([90 * MIN, 2 * HOUR, 3 * HOUR]))
        self.apply(
            CreateLot(
                STAFF,
                self.seq(STAFF),
                lot_id,
                mech,
                f"title {lot_id}",
                1000,
                self.draw(st.sampled_from([100, 250])),
                start,
                end,
                rules,
                deposit_fen=self.draw(st.sampled_from([0, 500])),
                timed_increment_fen=self.draw(st.sampled_from([0, 500])),
            )
        )
        self.apply(PublishLot(STAFF, self.seq(STAFF), lot_id))
        who = self.draw(
            st.lists(st.sampled_from(sorted(BIDDERS)), min_size=1, max_size=5, unique=True)
        )
        for bidder in who:
            self.apply(RegisterBidder(SERVICE, self.seq(SERVICE), lot_id, bidder, BIDDERS[bidder]))
            self.apply(ConfirmDeposit(SERVICE, self.seq(SERVICE), lot_id, bidder, 500))

    def amount(self, lot_id: str) -> int:
        lot = self.router.state.lots.get(lot_id)
        if lot is None:
            return 1000
        base = lot.price_fen if lot.leader_id else lot.start_price_fen
        inc = lot.timed_increment_fen or lot.increment_fen
        inc = self.draw(st.sampled_from([inc, lot.increment_fen]))
        k = self.draw(st.sampled_from([0, 1, 1, 1, 2, 3]))
        if lot.leader_id and self.draw(st.integers(0, 3)) == 0:
            return lot.price_fen  # a priority match (or an equal quote that must fail)
        off = self.draw(st.sampled_from([0, 0, 0, 1, -1, 37, -base]))
        amount = base + k * inc + off
        while amount in RESERVES:
            amount += 2
        return amount

    def step(self) -> None:
        kind = self.draw(
            st.sampled_from(
                ["bid"] * 16
                + ["register"] * 2
                + ["tick"] * 4
                + ["reserve"] * 2
                + [
                    "deposit",
                    "freeze",
                    "resume",
                    "resume",
                    "terminate",
                    "increment",
                    "blacklist",
                    "unblacklist",
                    "suspend",
                    "retry",
                    "retry",
                    "bad_tick",
                    "create",
                ]
            )
        )
        if kind == "bid":
            lot_id = self.lot_id()
            lot = self.router.state.lots.get(lot_id)
            known = sorted(lot.bidders) if lot is not None and lot.bidders else []
            pool = known if known and self.draw(st.integers(0, 4)) else sorted(BIDDERS)
            bidder = self.draw(st.sampled_from(pool))
            origin = f"bidder:{bidder}"
            self.apply(PlaceBid(origin, self.seq(origin), lot_id, self.amount(lot_id)))
        elif kind in ("register", "deposit"):
            bidder = self.draw(st.sampled_from(sorted(BIDDERS)))
            lot_id = self.lot_id()
            if kind == "register":
                self.apply(
                    RegisterBidder(SERVICE, self.seq(SERVICE), lot_id, bidder, BIDDERS[bidder])
                )
            if kind == "deposit" or self.draw(st.booleans()):
                self.apply(
                    ConfirmDeposit(
                        SERVICE,
                        self.seq(SERVICE),
                        lot_id,
                        bidder,
                        self.draw(st.sampled_from([500, 500, 0])),
                    )
                )
        elif kind == "tick":
            self.apply(Tick(SYSTEM, 0))
        elif kind == "bad_tick":
            origin = self.draw(st.sampled_from([STAFF, "bidder:ID-bob-3c"]))
            self.apply(Tick(origin, self.seq(origin)))
        elif kind == "suspend":
            self.apply(SuspendOverdue(SYSTEM, 0))
        elif kind == "reserve":
            self.apply(
                SetReserve(
                    STAFF, self.seq(STAFF), self.lot_id(), self.draw(st.sampled_from(RESERVES))
                )
            )
        elif kind == "increment":
            self.apply(
                ChangeIncrement(
                    STAFF,
                    self.seq(STAFF),
                    self.lot_id(),
                    self.draw(st.sampled_from([50, 300])),
                    self.draw(st.sampled_from(["main", "timed"])),
                )
            )
        elif kind in ("freeze", "resume", "terminate"):
            cls = {"freeze": FreezeLot, "resume": ResumeLot, "terminate": TerminateLot}[kind]
            self.apply(cls(STAFF, self.seq(STAFF), self.lot_id(), f"{kind} reason"))
        elif kind in ("blacklist", "unblacklist"):
            cls2 = BlacklistBidder if kind == "blacklist" else UnblacklistBidder
            self.apply(
                cls2(SERVICE, self.seq(SERVICE), self.draw(st.sampled_from(sorted(BIDDERS))), "r")
            )
        elif kind == "retry":
            earlier = [c for c, _, _ in self.log if c.origin != SYSTEM]
            if earlier:
                self.apply(self.draw(st.sampled_from(earlier)))
        elif kind == "create" and len(self.router.state.lots) < len(LOT_IDS):
            self.create(LOT_IDS[len(self.router.state.lots)])


def replay(log: list[tuple[Command, int, bytes]], cut: int) -> tuple[Router, bytes]:
    """(e): decode every command and apply it to a fresh Router; snapshot after ``cut``."""
    router = Router()
    snap = router.snapshot()
    for i, (cmd, at, ev_bytes) in enumerate(log):
        again = decode_command(encode_command(cmd))
        assert again == cmd
        assert encode_events(router.apply(again, at)) == ev_bytes, f"replay diverged at {i}"
        if i + 1 == cut:
            snap = router.snapshot()
    return router, snap


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_random_streams_keep_invariants(data: st.DataObject) -> None:
    drv = Driver(data)
    for lot_id in LOT_IDS[: data.draw(st.integers(1, 2))]:
        drv.create(lot_id)
    for _ in range(data.draw(st.integers(10, 70))):
        drv.step()
    drv.apply(Tick(SYSTEM, 0))
    drv.now += 10 * HOUR  # let everything that can close, close
    drv.apply(Tick(SYSTEM, 0))

    kinds = (
        {
            type(e).__name__
            for _, _, b in drv.log
            for e in msgspec.msgpack.decode(b)
            for e in [e]
            if False
        }
        if False
        else set()
    )
    for _, _, b in drv.log:
        for e in msgspec.msgpack.decode(b):
            kinds.add(
                e["type"]
                + (":" + e["phase"] if "phase" in e else "")
                + (":match" if e.get("priority_match") else "")
            )
    for k in sorted(kinds):
        event(k)

    full, _ = replay(drv.log, 0)  # (e)
    assert full.state_hash() == drv.router.state_hash()

    cut = data.draw(st.integers(0, len(drv.log)))  # (f)
    _, snap = replay(drv.log, cut)
    restored = Router.restore(snap)
    for cmd, at, ev_bytes in drv.log[cut:]:
        assert encode_events(restored.apply(cmd, at)) == ev_bytes
    assert restored.state_hash() == drv.router.state_hash()
    assert restored.next_deadline_ns() == drv.router.next_deadline_ns()


def test_checker_catches_a_wrong_winner() -> None:
    """The model is not vacuous: a LotSold naming the wrong bidder trips (a)."""
    chk = Checker()
    create = CreateLot(STAFF, 1, "LA", "english", "t", 1000, 100, T0, T0 + HOUR)
    chk.feed(
        create, [LotCreated("LA", "english", "t", 1000, 100, 0, T0, T0 + HOUR, 0, create.rules)]
    )
    reg = RegisterBidder(SERVICE, 1, "LA", "x")
    chk.feed(reg, [BidderRegistered("LA", "0001", 0), BidderRegistered("LA", "0002", 0)])
    bid = PlaceBid("bidder:x", 1, "LA", 1000)
    chk.feed(bid, [BidAccepted("LA", "0001", 1000, 1), BidAccepted("LA", "0002", 1100, 2)])
    try:
        chk.feed(bid, [LotSold("LA", "0001", 1100, T0 + HOUR, 0)])
    except AssertionError:
        return
    raise AssertionError("checker accepted a wrong winner")


def test_checker_catches_a_rejected_style_leak() -> None:
    chk = Checker()
    try:
        chk.feed(Tick(SYSTEM, 0), [CommandRejected("LA", 101, "ID-alice-7f")])  # type: ignore[arg-type]
    except AssertionError:
        return
    raise AssertionError("checker missed an identity")
