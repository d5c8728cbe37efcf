"""Seeded scenarios for ``pubex simulate``.

* ``hot-land``: one land parcel listed Jiangsu-style (RULES.md Variant A) with
  30 qualified bidders; a few quotes in the listing period, then timed bidding
  with a 4-minute countdown restarted by every bid.  Bidders hold private
  valuations; each countdown draws a burst of bids near its end, some on a
  stale price (refused ``bid_below_increment``).
* ``judicial-day``: 1,000 English lots of a judicial auction day (RULES.md §5:
  24 h bidding, 5-minute anti-sniping) with 2-20 bidders each -- incremental,
  jump and sniping bidders -- plus the mistakes and staff actions of a real
  day, so that every kind of refusal occurs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.messages import (
    AcceptPrice,
    BidAccepted,
    BlacklistBidder,
    Command,
    ConfirmDeposit,
    CreateLot,
    Event,
    FreezeLot,
    LotExtended,
    PlaceBid,
    PriceTicked,
    PublishLot,
    RegisterBidder,
    ResumeLot,
    RevealSealed,
    SetReserve,
    SubmitSealed,
    TerminateLot,
    WithdrawSealed,
)
from engine.rules import (
    DUTCH,
    EXCHANGE,
    JIANGSU,
    JUDICIAL,
    ONE_TIME_QUOTE,
    SUZHOU_ONE_PRICE,
    TENDER_LOWEST,
    RuleSet,
)
from engine.sealed import seal_commitment
from simulators.agents import DEFINITIONS as AGENT_DEFINITIONS
from simulators.agents import agent_scenario
from simulators.harness import EPOCH_NS, HOUR_NS, MINUTE_NS, NS_PER_S, Harness

STAFF = "staff:sim"
YUAN = 100  # fen


@dataclass
class Agent:
    bidder_id: str
    lot_id: str
    valuation_fen: int
    strategy: str  # incremental | jump | sniper

    @property
    def origin(self) -> str:
        return f"bidder:{self.bidder_id}"


class Scenario:
    def __init__(self, sim: Harness) -> None:
        self.sim = sim
        self.rng = sim.rng

    def staff(self, make: Callable[[int], Command], t_ns: int) -> list[Event]:
        return self.sim.send(make(self.sim.next_seq(STAFF)), t_ns)

    def bid(self, agent: Agent, amount_fen: int, t_ns: int) -> list[Event]:
        seq = self.sim.next_seq(agent.origin)
        return self.sim.send(PlaceBid(agent.origin, seq, agent.lot_id, amount_fen), t_ns)

    def lot_view(self, lot_id: str) -> tuple[int, str, int, int, str]:
        """What any watcher sees: price, leader code, increment, end, status."""
        lot = self.sim.router.state.lots[lot_id]
        inc = (
            lot.timed_increment_fen
            if lot.phase == "timed" and lot.timed_increment_fen
            else (lot.increment_fen)
        )
        return lot.price_fen, lot.leader_code, inc, lot.end_ns, lot.status

    def my_code(self, agent: Agent) -> str:
        b = self.sim.router.state.lots[agent.lot_id].bidders.get(agent.bidder_id)
        return b.code if b is not None else ""

    def next_amount(self, agent: Agent) -> int | None:
        price, leader, inc, _end, status = self.lot_view(agent.lot_id)
        if status != "open" or leader == self.my_code(agent):
            return None
        lot = self.sim.router.state.lots[agent.lot_id]
        base = lot.start_price_fen if not leader else price + inc
        steps = self.rng.choice((1, 1, 1, 2, 5)) if agent.strategy == "jump" else 1
        amount = base + (steps - 1) * inc
        return amount if amount <= agent.valuation_fen else None


# ------------------------------------------------------------------ hot-land


class HotLand(Scenario):
    LOT = "LAND-2026-001"
    BIDDERS = 30

    def setup(self) -> None:
        t0 = EPOCH_NS + 9 * HOUR_NS
        start, end = t0 + HOUR_NS, t0 + 10 * 24 * HOUR_NS
        start_fen = 1_000_000_000 * YUAN  # a ¥1 bn parcel
        self.inc = 5_000_000 * YUAN  # ¥5 m (0.5 % of the start, RULES.md §1.9)
        self.staff(
            lambda s: CreateLot(
                STAFF,
                s,
                self.LOT,
                "listing",
                "Plot 2026-001, residential",
                start_fen,
                self.inc,
                start,
                end,
                rules=JIANGSU,
                deposit_fen=200_000_000 * YUAN,
            ),
            t0,
        )
        self.staff(lambda s: PublishLot(STAFF, s, self.LOT), t0 + 1)
        self.agents = []
        for i in range(self.BIDDERS):
            bidder = f"developer-{i:02d}"
            self.staff(lambda s, b=bidder: RegisterBidder(STAFF, s, self.LOT, b), t0 + 2)
            self.staff(
                lambda s, b=bidder: ConfirmDeposit(STAFF, s, self.LOT, b, 200_000_000 * YUAN),
                t0 + 3,
            )
            value = int(start_fen * self.rng.uniform(1.2, 1.9))
            self.agents.append(Agent(bidder, self.LOT, value, "incremental"))
        self.staff(
            lambda s: SetReserve(STAFF, s, self.LOT, start_fen * 11 // 10), end - 2 * HOUR_NS
        )
        for agent in self.rng.sample(self.agents, 4):  # a few listing-phase quotes
            self.sim.at(start + self.rng.randrange(8 * 24 * HOUR_NS), self._quote(agent))
        self.sim.listeners.append(self._on_events)

    def _quote(self, agent: Agent) -> Callable[[int], None]:
        def act(t: int) -> None:
            amount = self.next_amount(agent)
            if amount is not None:
                self.bid(agent, amount, t)

        return act

    def _on_events(self, cmd: Command, events: list[Event]) -> None:
        """Every restart of the countdown draws a burst near its end."""
        for ev in events:
            if type(ev) is LotExtended or (
                type(ev).__name__ == "PhaseChanged" and getattr(ev, "phase", "") == "timed"
            ):
                self._burst(ev.end_ns)

    def _burst(self, end_ns: int) -> None:
        price, _leader, inc, _end, _status = self.lot_view(self.LOT)
        countdown = 4 * MINUTE_NS
        for agent in self.agents:
            if agent.valuation_fen >= price + inc and self.rng.random() < 0.35:
                # most bids arrive in the last 30 s of the countdown
                lead = int(countdown * self.rng.random() ** 3)
                self.sim.at(end_ns - 1 - lead, self._timed_bid(agent, price))

    def _timed_bid(self, agent: Agent, seen_price: int) -> Callable[[int], None]:
        def act(t: int) -> None:
            price, leader, inc, _end, status = self.lot_view(self.LOT)
            if status != "open" or leader == self.my_code(agent):
                return
            if price != seen_price and self.rng.random() < 0.7:
                return  # saw the new price in time; its own burst is scheduled
            amount = seen_price + inc  # possibly stale: a late packet
            if amount <= agent.valuation_fen:
                self.bid(agent, amount, t)

        return act


# -------------------------------------------------------------- judicial-day


class JudicialDay(Scenario):
    LOTS = 1_000

    def setup(self) -> None:
        self.t0 = EPOCH_NS + 8 * HOUR_NS
        self.start = EPOCH_NS + 10 * HOUR_NS
        self.end = self.start + 24 * HOUR_NS
        for n in range(self.LOTS):
            self._lot(n)
        self._staff_day()

    def _lot(self, n: int) -> None:
        lot_id = f"J{n:04d}"
        rng = self.rng
        start_fen = rng.randrange(20_000, 5_000_000) * YUAN
        inc = max(100 * YUAN, start_fen // 100 // (100 * YUAN) * (100 * YUAN))  # ~1 %, whole ¥100
        rules = EXCHANGE if n % 10 == 0 else JUDICIAL  # exchange: no self-outbid, 3 min
        end = self.end + (n % 60) * MINUTE_NS  # closes staggered over an hour
        t = self.t0 + n * NS_PER_S
        self.staff(
            lambda s: CreateLot(
                STAFF,
                s,
                lot_id,
                "english",
                f"Judicial lot {n}",
                start_fen,
                inc,
                self.start,
                end,
                rules=rules,
                deposit_fen=start_fen // 10,
            ),
            t,
        )
        self.staff(lambda s: PublishLot(STAFF, s, lot_id), t)
        if n % 10 == 0:  # exchange lots carry a secret reserve above the start
            self.staff(lambda s: SetReserve(STAFF, s, lot_id, start_fen * 13 // 10), t)
        for i in range(rng.randint(2, 20)):
            self._bidder(lot_id, n, i, start_fen, inc, end, t)

    def _bidder(
        self, lot_id: str, n: int, i: int, start_fen: int, inc: int, end: int, t: int
    ) -> None:
        rng = self.rng
        bidder = f"person-{n:04d}-{i:02d}"
        priority = 1 if (n % 25 == 0 and i == 0) else 0
        self.staff(lambda s: RegisterBidder(STAFF, s, lot_id, bidder, priority), t)
        if rng.random() < 0.92:  # the rest never confirm their deposit
            self.staff(lambda s: ConfirmDeposit(STAFF, s, lot_id, bidder, start_fen // 10), t)
        strategy = rng.choice(("incremental", "incremental", "jump", "sniper"))
        agent = Agent(bidder, lot_id, int(start_fen * rng.uniform(0.95, 1.7)), strategy)
        if strategy == "sniper":
            for _ in range(rng.randint(1, 3)):
                self.sim.at(end - rng.randrange(4 * MINUTE_NS), self._act(agent))
        else:
            for _ in range(rng.randint(1, 6)):
                self.sim.at(self.start + rng.randrange(end - self.start), self._act(agent))
        if rng.random() < 0.01:  # an eager bidder before the start
            self.sim.at(self.start - MINUTE_NS, self._act(agent))
        if rng.random() < 0.02:  # a late one, after the close
            self.sim.at(end + 2 * HOUR_NS, self._act(agent))

    def _act(self, agent: Agent) -> Callable[[int], None]:
        def act(t: int) -> None:
            price, leader, inc, end, status = self.lot_view(agent.lot_id)
            if status in ("published", "sold", "unsold", "terminated"):
                self.bid(agent, price + inc, t)  # too early or too late: refused
                return
            amount = self.next_amount(agent)
            mistake = self.rng.random()
            if amount is None and leader == self.my_code(agent) and mistake < 0.2:
                amount = price + inc  # the leader tries to outbid itself
            if amount is None:
                return
            if mistake < 0.03:
                amount = price + inc // 2 if leader else amount - inc  # below the increment/start
            elif mistake < 0.05:
                amount += inc // 3  # not a multiple of the increment
            events = self.bid(agent, amount, t)
            if mistake > 0.99:  # a terminal retry of the same frame
                seq = self.sim._client_seq[agent.origin]
                self.sim.send(PlaceBid(agent.origin, seq, agent.lot_id, amount), t + 1)
            if any(type(e) is BidAccepted for e in events) and agent.strategy == "sniper":
                self.sim.at(end - self.rng.randrange(MINUTE_NS), self._act(agent))

        return act

    def _staff_day(self) -> None:
        midday = self.start + 4 * HOUR_NS
        for n in range(5, self.LOTS, 97):  # freezes for an outage check, then resumed
            lot_id = f"J{n:04d}"
            self.sim.at(
                midday,
                lambda t, lid=lot_id: self.staff(
                    lambda s: FreezeLot(STAFF, s, lid, "court request: verify title"), t
                ),
            )
            self.sim.at(
                midday + 2 * HOUR_NS,
                lambda t, lid=lot_id: self.staff(
                    lambda s: ResumeLot(STAFF, s, lid, "title verified"), t
                ),
            )
        for n in (7, 507):
            lot_id = f"J{n:04d}"
            self.sim.at(
                midday + HOUR_NS,
                lambda t, lid=lot_id: self.staff(
                    lambda s: TerminateLot(STAFF, s, lid, "parcel sealed by the court"), t
                ),
            )
        for n in (11, 611):  # a bidder blacklisted mid-day (R-0.3(d))
            bidder = f"person-{n:04d}-01"
            self.sim.at(
                midday + 30 * MINUTE_NS,
                lambda t, b=bidder: self.staff(
                    lambda s: BlacklistBidder(STAFF, s, b, "credit blacklist"), t
                ),
            )
        stray = Agent("person-stray", "J9999", 10**9, "incremental")  # an unknown lot
        self.sim.at(self.start + HOUR_NS, lambda t: self.bid(stray, 100 * YUAN, t) and None)
        self._mistakes(midday)

    def _mistakes(self, midday: int) -> None:
        """The staff and terminal mistakes of a real day, each refused with its code."""
        lot = "J0010"  # an exchange lot: it already has a reserve
        price_of = self.sim.router.state.lots[lot].start_price_fen
        for make in (
            lambda s: SetReserve(STAFF, s, lot, price_of * 2),  # reserve_already_set
            lambda s: SetReserve(STAFF, s, "J0001", price_of // 2),  # reserve_below_start
            lambda s: ResumeLot(STAFF, s, "J0002", "not frozen"),  # lot_not_frozen
            lambda s: FreezeLot(STAFF, s, "J0007", "after termination"),  # lot_closed
        ):
            self.sim.at(midday + 90 * MINUTE_NS, lambda t, m=make: self.staff(m, t) and None)
        late = self.end - 10 * MINUTE_NS  # within every lot's reserve cut-off
        self.sim.at(
            late, lambda t: self.staff(lambda s: SetReserve(STAFF, s, "J0003", 10**12), t) and None
        )
        self.sim.at(
            late,
            lambda t: (
                self.sim.send(  # an old frame replayed: client_seq_stale
                    PlaceBid("bidder:person-0001-00", 0, "J0001", 10**9), t
                )
                and None
            ),
        )
        self.sim.at(
            late,
            lambda t: (
                self.sim.send(  # a bidder trying a staff command
                    FreezeLot("bidder:person-0002-00", 1_000_000, "J0002", "mine"), t
                )
                and None
            ),
        )
        for n in range(5, self.LOTS, 97):  # bids that reach a frozen lot
            agent = Agent(f"person-{n:04d}-00", f"J{n:04d}", 10**12, "incremental")
            self.sim.at(midday + HOUR_NS, lambda t, a=agent: self.bid(a, 10**9, t) and None)


# --------------------------------------------------------------------- dutch


class DutchDay(Scenario):
    """200 confiscated-goods lots on descending clocks (RULES.md §2.5): each
    bidder accepts once the price falls to its valuation, after a reaction
    delay -- so some acceptances race for one tick and some arrive stale."""

    LOTS = 200

    def setup(self) -> None:
        t0 = EPOCH_NS + 9 * HOUR_NS
        tick_ns = 30 * NS_PER_S
        rules = DUTCH.__class__(**{**_fields(DUTCH), "tick_ns": tick_ns})
        self.by_lot: dict[str, list[Agent]] = {}
        for n in range(self.LOTS):
            lot_id = f"D{n:03d}"
            start_fen = self.rng.randrange(2_000, 200_000) * YUAN
            step = max(YUAN, start_fen // 50 // YUAN * YUAN)
            floor = start_fen // 2
            start = t0 + HOUR_NS + n * MINUTE_NS
            self.staff(
                lambda s, lid=lot_id, sf=start_fen, st=step, fl=floor, b=start: CreateLot(
                    STAFF,
                    s,
                    lid,
                    "dutch",
                    f"罚没物品 Confiscated lot {lid}",
                    sf,
                    st,
                    b,
                    b + 2 * HOUR_NS,
                    rules=rules,
                    floor_fen=fl,
                ),
                t0,
            )
            self.staff(lambda s, lid=lot_id: PublishLot(STAFF, s, lid), t0)
            for i in range(self.rng.randint(1, 6)):
                bidder = f"buyer-{n:03d}-{i}"
                self.staff(lambda s, lid=lot_id, b=bidder: RegisterBidder(STAFF, s, lid, b), t0)
                self.staff(lambda s, lid=lot_id, b=bidder: ConfirmDeposit(STAFF, s, lid, b, 0), t0)
                agent = Agent(bidder, lot_id, int(start_fen * self.rng.uniform(0.4, 0.95)), "dutch")
                self.by_lot.setdefault(lot_id, []).append(agent)
        self.sim.listeners.append(self._on_events)

    def _on_events(self, cmd: Command, events: list[Event]) -> None:
        for ev in events:
            if type(ev) is PriceTicked:
                for agent in self.by_lot.get(ev.lot_id, ()):
                    if ev.price_fen <= agent.valuation_fen:
                        delay = int(self.rng.expovariate(1 / 20) * NS_PER_S)
                        self.sim.at(ev.at_ns + delay, self._accept(agent, ev.tick))

    def _accept(self, agent: Agent, tick: int) -> Callable[[int], None]:
        def act(t: int) -> None:
            seq = self.sim.next_seq(agent.origin)
            self.sim.send(AcceptPrice(agent.origin, seq, agent.lot_id, tick), t)

        return act


# -------------------------------------------------------------------- tender


class TenderDay(Scenario):
    """120 sealed lots (one-time quotes, lowest-price tenders, Suzhou closest-to-
    average): bidders commit, some replace or withdraw, most reveal in the
    window, a few forget or reveal the wrong amount (invalid, with the reason)."""

    LOTS = 120
    RULES = (ONE_TIME_QUOTE, TENDER_LOWEST, SUZHOU_ONE_PRICE)

    def setup(self) -> None:
        t0 = EPOCH_NS + 8 * HOUR_NS
        for n in range(self.LOTS):
            lot_id = f"T{n:03d}"
            rules = self.RULES[n % 3]
            ref_fen = self.rng.randrange(100_000, 10_000_000) * YUAN
            deadline = t0 + 2 * HOUR_NS + n * MINUTE_NS
            self.staff(
                lambda s, lid=lot_id, r=rules, f=ref_fen, d=deadline: CreateLot(
                    STAFF,
                    s,
                    lid,
                    "sealed",
                    f"招标 Tender {lid}",
                    f,
                    1,
                    t0,
                    d,
                    rules=r,
                ),
                t0,
            )
            self.staff(lambda s, lid=lot_id: PublishLot(STAFF, s, lid), t0)
            for i in range(self.rng.randint(1, 7)):
                self._bidder(lot_id, n, i, rules, ref_fen, t0, deadline)

    def _bidder(
        self, lot_id: str, n: int, i: int, rules: RuleSet, ref_fen: int, t0: int, deadline: int
    ) -> None:
        rng = self.rng
        bidder = f"firm-{n:03d}-{i}"
        self.staff(lambda s: RegisterBidder(STAFF, s, lot_id, bidder), t0)
        self.staff(lambda s: ConfirmDeposit(STAFF, s, lot_id, bidder, 0), t0)
        spread = (0.7, 1.02) if rules.evaluation == "lowest" else (0.98, 1.4)
        amount = int(ref_fen * rng.uniform(*spread)) // YUAN * YUAN
        nonce = f"{rng.getrandbits(128):032x}"
        agent = Agent(bidder, lot_id, amount, "tender")
        submit_at = t0 + rng.randrange(deadline - t0)
        self.sim.at(
            submit_at,
            lambda t: self._send(
                agent,
                SubmitSealed(
                    agent.origin,
                    self.sim.next_seq(agent.origin),
                    lot_id,
                    seal_commitment(lot_id, amount, nonce),
                ),
                t,
            ),
        )
        fate = rng.random()
        if fate < 0.05:  # withdraws before the deadline
            self.sim.at(
                deadline - MINUTE_NS,
                lambda t: self._send(
                    agent, WithdrawSealed(agent.origin, self.sim.next_seq(agent.origin), lot_id), t
                ),
            )
        elif fate < 0.10:  # never reveals
            return
        wrong = fate < 0.13  # reveals a different amount: invalid
        reveal_at = deadline + rng.randrange(rules.reveal_window_ns)
        self.sim.at(
            reveal_at,
            lambda t: self._send(
                agent,
                RevealSealed(
                    agent.origin,
                    self.sim.next_seq(agent.origin),
                    lot_id,
                    amount + YUAN if wrong else amount,
                    nonce,
                ),
                t,
            ),
        )

    def _send(self, agent: Agent, cmd: Command, t: int) -> None:
        self.sim.send(cmd, t)


def _fields(rules: object) -> dict[str, object]:
    return {f: getattr(rules, f) for f in rules.__struct_fields__}  # type: ignore[attr-defined]


SCENARIOS: dict[str, type[Scenario]] = {
    "hot-land": HotLand,
    "judicial-day": JudicialDay,
    "dutch": DutchDay,
    "tender": TenderDay,
}
# Seeded bidder agents (simulators/agents.py): definitions shared with the live Locust runs.
SCENARIOS.update({name: agent_scenario(name, b) for name, b in AGENT_DEFINITIONS.items()})  # type: ignore[misc]

from simulators.emall_day import EmallDay  # noqa: E402 (it needs nothing from here)

SCENARIOS["emall-day"] = EmallDay  # type: ignore[assignment]

from simulators.procurement_days import EmallReverse, VbpDay  # noqa: E402

SCENARIOS["vbp"] = VbpDay  # type: ignore[assignment]
SCENARIOS["emall-reverse"] = EmallReverse  # type: ignore[assignment]
