"""Small builders for engine tests: a ``Market`` wrapping a Router, and event finders.

Times are integer nanoseconds.  ``Market`` keeps its own clock (``now``) that only moves
forward, and a per-origin ``client_seq`` counter, so a test reads like a script:

    m = Market()
    m.create_english("L1")          # opens at START, closes at START + 1 h
    m.register("L1", "alice")
    m.bid("L1", "alice", 100_00, at=START + 60 * S)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from engine.messages import (
    BlacklistBidder,
    ChangeIncrement,
    Command,
    CommandRejected,
    CommandRetried,
    ConfirmDeposit,
    CreateLot,
    Event,
    FreezeLot,
    PlaceBid,
    PublishLot,
    RegisterBidder,
    ResumeLot,
    SetReserve,
    SuspendOverdue,
    TerminateLot,
    Tick,
    UnblacklistBidder,
)
from engine.router import Router
from engine.rules import HOUR_NS, MINUTE_NS, NS_PER_S, RuleSet

S = NS_PER_S
MIN = MINUTE_NS
HOUR = HOUR_NS
T0 = 1_700_000_000 * S  # the market's clock starts here
START = T0 + HOUR  # default lot start
END = START + 24 * HOUR  # default lot end

STAFF = "staff:clerk-01"
SERVICE = "service:registry"
SYSTEM = "system"

E = TypeVar("E", bound=Event)


def bidder_origin(bidder: str) -> str:
    return f"bidder:{bidder}"


class Market:
    """A Router with an auto-advancing clock and per-origin client_seq counters."""

    def __init__(self, router: Router | None = None, now: int = T0) -> None:
        self.router = router if router is not None else Router()
        self.now = max(now, self.router.state.now_ns)
        self.seqs: dict[str, int] = {}
        self.log: list[tuple[Command, int]] = []  # every command applied, with its time
        self.events: list[Event] = []

    # ---------------------------------------------------------------- core
    def next_seq(self, origin: str) -> int:
        if origin == SYSTEM:
            return 0
        self.seqs[origin] = self.seqs.get(origin, 0) + 1
        return self.seqs[origin]

    def apply(self, cmd: Command, at: int | None = None) -> list[Event]:
        if at is None:
            at = self.now + 1
        assert at >= self.now, "tests must not move time backwards"
        self.now = at
        self.log.append((cmd, at))
        out = self.router.apply(cmd, at)
        self.events.extend(out)
        return out

    def cmd(self, cls: type[Command], origin: str, at: int | None = None, **kw: Any) -> list[Event]:
        return self.apply(cls(origin=origin, client_seq=self.next_seq(origin), **kw), at)

    @property
    def state(self):  # type: ignore[no-untyped-def]
        return self.router.state

    def lot(self, lot_id: str):  # type: ignore[no-untyped-def]
        return self.router.state.lots[lot_id]

    # ---------------------------------------------------------------- staff
    def create(
        self,
        lot_id: str,
        mechanism: str,
        *,
        start: int = START,
        end: int = END,
        start_price: int = 1000,
        increment: int = 100,
        rules: RuleSet | None = None,
        deposit: int = 0,
        timed_increment: int = 0,
        publish: bool = True,
        at: int | None = None,
        origin: str = STAFF,
    ) -> list[Event]:
        out = self.cmd(
            CreateLot,
            origin,
            at,
            lot_id=lot_id,
            mechanism=mechanism,
            title=f"lot {lot_id}",
            start_price_fen=start_price,
            increment_fen=increment,
            start_ns=start,
            end_ns=end,
            rules=rules if rules is not None else RuleSet(),
            deposit_fen=deposit,
            timed_increment_fen=timed_increment,
        )
        if publish:
            out += self.publish(lot_id)
        return out

    def create_english(self, lot_id: str = "L1", **kw: Any) -> list[Event]:
        return self.create(lot_id, "english", **kw)

    def create_listing(self, lot_id: str = "L1", **kw: Any) -> list[Event]:
        return self.create(lot_id, "listing", **kw)

    def publish(self, lot_id: str, at: int | None = None) -> list[Event]:
        return self.cmd(PublishLot, STAFF, at, lot_id=lot_id)

    def set_reserve(self, lot_id: str, reserve: int, at: int | None = None) -> list[Event]:
        return self.cmd(SetReserve, STAFF, at, lot_id=lot_id, reserve_fen=reserve)

    def change_increment(
        self, lot_id: str, inc: int, phase: str = "main", at: int | None = None
    ) -> list[Event]:
        return self.cmd(ChangeIncrement, STAFF, at, lot_id=lot_id, increment_fen=inc, phase=phase)

    def freeze(
        self,
        lot_id: str,
        reason: str = "network failure",
        at: int | None = None,
        origin: str = STAFF,
    ) -> list[Event]:
        return self.cmd(FreezeLot, origin, at, lot_id=lot_id, reason=reason)

    def resume(self, lot_id: str, reason: str = "fixed", at: int | None = None) -> list[Event]:
        return self.cmd(ResumeLot, STAFF, at, lot_id=lot_id, reason=reason)

    def terminate(
        self, lot_id: str, reason: str = "court seal", at: int | None = None, origin: str = STAFF
    ) -> list[Event]:
        return self.cmd(TerminateLot, origin, at, lot_id=lot_id, reason=reason)

    # ------------------------------------------------------------- registry
    def register(
        self,
        lot_id: str,
        bidder: str,
        deposit: bool = True,
        priority: int = 0,
        at: int | None = None,
        amount: int | None = None,
    ) -> list[Event]:
        out = self.cmd(
            RegisterBidder, SERVICE, at, lot_id=lot_id, bidder_id=bidder, priority_rank=priority
        )
        if deposit:
            out += self.confirm_deposit(lot_id, bidder, amount)
        return out

    def confirm_deposit(
        self, lot_id: str, bidder: str, amount: int | None = None, at: int | None = None
    ) -> list[Event]:
        if amount is None:
            amount = self.lot(lot_id).deposit_fen
        return self.cmd(
            ConfirmDeposit, SERVICE, at, lot_id=lot_id, bidder_id=bidder, amount_fen=amount
        )

    def blacklist(self, bidder: str, at: int | None = None) -> list[Event]:
        return self.cmd(BlacklistBidder, SERVICE, at, bidder_id=bidder, reason="default")

    def unblacklist(self, bidder: str, at: int | None = None) -> list[Event]:
        return self.cmd(UnblacklistBidder, SERVICE, at, bidder_id=bidder, reason="paid")

    # ----------------------------------------------------------------- bids
    def bid(self, lot_id: str, bidder: str, amount: int, at: int | None = None) -> list[Event]:
        return self.cmd(PlaceBid, bidder_origin(bidder), at, lot_id=lot_id, amount_fen=amount)

    # ----------------------------------------------------------------- time
    def tick(self, at: int | None = None) -> list[Event]:
        return self.apply(Tick(origin=SYSTEM, client_seq=0), at)

    def suspend_overdue(self, at: int | None = None) -> list[Event]:
        return self.apply(SuspendOverdue(origin=SYSTEM, client_seq=0), at)


# ----------------------------------------------------------------- finders
def of_type(events: Iterable[Event], cls: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, cls)]


def one(events: Iterable[Event], cls: type[E]) -> E:
    found = of_type(events, cls)
    assert len(found) == 1, f"expected one {cls.__name__}, got {found!r}"
    return found[0]


def none_of(events: Iterable[Event], cls: type[Event]) -> None:
    found = of_type(events, cls)
    assert not found, f"expected no {cls.__name__}, got {found!r}"


def rejected(events: Iterable[Event]) -> CommandRejected:
    return one(events, CommandRejected)


def reject_code(events: Iterable[Event]) -> int | None:
    """The code of the single rejection in ``events``, or None when nothing was refused."""
    found = of_type(events, CommandRejected)
    assert len(found) <= 1, found
    return found[0].code if found else None


def retried(events: Iterable[Event]) -> CommandRetried:
    return one(events, CommandRetried)


def business_state(router: Router) -> bytes:
    """The state without the two fields every command moves (now_ns, applied)."""
    from engine.state import encode_state

    st = router.state
    saved = st.now_ns, st.applied
    try:
        st.now_ns, st.applied = 0, 0
        return encode_state(st)
    finally:
        st.now_ns, st.applied = saved
