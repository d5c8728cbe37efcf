"""The router's deadlines under random command streams over procurement lots:
a VBP lot (revival, regions, post-qualification, payment), a multi-winner
reverse competition (share rounds, SME deduction, payment) and a scored
tender (committee, committed draw), with freezes, resumes, outages
(SuspendOverdue) and retries mixed in.

Properties, after every command:
* every lot with a deadline has it in the router's deadline heap (a path that
  moves ``deadline_ns`` without scheduling it behaves differently in a full
  replay and after ``Router.restore``, which rebuilds the heap from state);
* ``next_deadline_ns()`` is never at or before the time just applied (a
  deadline in the past that nothing advances would make the runtime Tick
  forever);
* a lot that is SOLD never reopens, and no lot is sold twice without a voided
  award between.
At the end: a full replay and a snapshot + tail replay give the same events
and state, and the same next deadline.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from engine.draw import seed_hash
from engine.messages import (
    AcceptRevival,
    AwardVoided,
    ChooseRegions,
    Command,
    CommitDrawSeed,
    ConfirmAward,
    ConfirmDeposit,
    ConfirmPayment,
    CreateLot,
    DeclareDefault,
    DeclineAward,
    EnterScores,
    FinalizeEvaluation,
    FreezeLot,
    LotSold,
    PlaceBid,
    PublishLot,
    QualifyWinner,
    RegionDemand,
    RegisterBidder,
    ResumeLot,
    RevealDrawSeed,
    RevealSealed,
    SubmitSealed,
    SuspendOverdue,
    Tick,
    WithdrawSealed,
    encode_events,
)
from engine.router import Router
from engine.rules import MINUTE_NS, RuleSet
from engine.sealed import seal_commitment
from tests.engine.test_properties import replay

S = 1_000_000_000
T0 = 1_700_000_000 * S
START = T0 + 10 * MINUTE_NS
END = START + 60 * MINUTE_NS
STAFF = "staff:clerk"
SERVICE = "service:registry"
SYSTEM = "system"
FIRMS = ("a", "b", "c", "d", "e")
SEED = "0123456789abcdef" * 4
WIN = 10 * MINUTE_NS
SETTLE = dict(payment_window_ns=30 * MINUTE_NS)

VBP_RULES = RuleSet(
    name="vbp-prop",
    evaluation="vbp",
    vbp_round="r10",
    reveal_window_ns=WIN,
    revival_window_ns=WIN,
    region_window_ns=WIN,
    post_qualification=True,
    **SETTLE,
)
REVERSE_RULES = RuleSet(
    name="rev-prop",
    min_valid_bids=2,
    extension_window_ns=0,
    reverse_winners=3,
    confirm_window_ns=WIN,
    sme_deduction_pct=10,
    **SETTLE,
)
SCORING_RULES = RuleSet(
    name="score-prop",
    evaluation="scoring",
    min_valid_bids=2,
    reveal_window_ns=WIN,
    evaluation_window_ns=WIN,
    post_qualification=True,
    **SETTLE,
)
LOTS: dict[str, tuple[str, RuleSet, int]] = {
    "V1": ("vbp", VBP_RULES, 40_000),
    "R1": ("reverse", REVERSE_RULES, 10_000),
    "T1": ("sealed", SCORING_RULES, 60_000),
}
SEALED_PRICES = (5_000, 9_000, 9_000, 10_000, 20_000, 30_000, 39_000, 50_000)


class Driver:
    def __init__(self, data: st.DataObject) -> None:
        self.data = data
        self.router = Router()
        self.now = T0
        self.seqs: dict[str, int] = {}
        self.log: list[tuple[Command, int, bytes]] = []
        self.sold: dict[str, int] = {}  # lot -> LotSold events minus voided awards
        self.submitted: dict[tuple[str, str], int] = {}

    def draw(self, strategy: st.SearchStrategy[Any]) -> Any:
        return self.data.draw(strategy)

    def seq(self, origin: str) -> int:
        self.seqs[origin] = self.seqs.get(origin, 0) + 1
        return self.seqs[origin]

    def apply(self, cmd: Command, at: int | None = None) -> None:
        self.now = max(self.now + 1, at or 0)
        out = self.router.apply(cmd, self.now)
        self.log.append((cmd, self.now, encode_events(out)))
        for ev in out:
            if isinstance(ev, LotSold):
                self.sold[ev.lot_id] = self.sold.get(ev.lot_id, 0) + 1
                assert self.sold[ev.lot_id] == 1, f"{ev.lot_id} sold twice"
            elif isinstance(ev, AwardVoided):
                self.sold[ev.lot_id] -= 1
        self.check()

    def check(self) -> None:
        router = self.router
        scheduled = set(router._heap)
        for lot in router.state.lots.values():
            if lot.deadline_ns >= 0:
                assert (lot.deadline_ns, lot.lot_id) in scheduled, (lot.lot_id, lot.phase)
        due = router.next_deadline_ns()
        assert due is None or due > self.now, (due, self.now)

    def setup(self) -> None:
        for lot_id, (mech, rules, ceiling) in LOTS.items():
            regions = tuple(RegionDemand(r, d) for r, d in (("bj", 7), ("sh", 5), ("gd", 3)))
            self.apply(
                CreateLot(
                    STAFF,
                    self.seq(STAFF),
                    lot_id,
                    mech,  # type: ignore[arg-type]
                    lot_id,
                    ceiling,
                    100,
                    START,
                    END,
                    rules,
                    deposit_fen=100,
                    regions=regions if mech == "vbp" else (),
                )
            )
            self.apply(PublishLot(STAFF, self.seq(STAFF), lot_id))
            for firm in FIRMS:
                sme = firm in "bd"
                self.apply(RegisterBidder(SERVICE, self.seq(SERVICE), lot_id, firm, 0, sme))
                self.apply(ConfirmDeposit(SERVICE, self.seq(SERVICE), lot_id, firm, 100))

    def origin(self, lot_id: str, firm: str) -> str:
        return f"{'supplier' if lot_id == 'R1' else 'bidder'}:{firm}"

    def step(self) -> None:
        d = self.draw
        lot_id = d(st.sampled_from(sorted(LOTS)))
        firm = d(st.sampled_from(FIRMS))
        origin = self.origin(lot_id, firm)
        lot = self.router.state.lots[lot_id]
        fitting = {
            "submission": ("submit", "submit", "withdraw", "seed"),
            "reveal": ("reveal", "reveal", "reveal", "seed"),
            "quoting": ("quote", "quote", "quote"),
            "confirming": ("answer", "answer"),
            "revival": ("revival", "revival", "seed"),
            "regions": ("regions", "regions"),
            "evaluation": ("score", "score", "score", "finalize", "seed"),
            "draw": ("seed",),
        }.get(lot.phase, ())
        if lot.status != "open":
            fitting = ()
        if lot.status == "frozen":
            fitting = ("resume", "resume")
        elif lot.status == "sold":
            fitting = ("qualify", "qualify", "pay", "default")
        noise = ("freeze", "outage", "retry", "wait", "seed", "qualify", "pay")
        if fitting and d(st.integers(0, 4)):
            kind = d(st.sampled_from(("tick", *fitting, *fitting)))
        else:
            kind = d(st.sampled_from(("tick", *noise)))
        if kind == "tick":  # to the next deadline, or part of the way
            due = self.router.next_deadline_ns()
            step = self.now + d(st.integers(1, WIN // 2))
            if due is not None and d(st.booleans()):
                step = due
            self.apply(Tick(SYSTEM, 0), step if due is None else min(step, due))
        elif kind == "wait":
            self.now += d(st.integers(1, 3 * WIN))
        elif kind == "submit":
            price = d(st.sampled_from(SEALED_PRICES))
            self.submitted[lot_id, firm] = price
            c = seal_commitment(lot_id, price, f"n-{firm}-{price}")
            self.apply(SubmitSealed(origin, self.seq(origin), lot_id, c))
        elif kind == "withdraw":
            self.apply(WithdrawSealed(origin, self.seq(origin), lot_id))
        elif kind == "reveal":
            mine = sorted(f for (lot, f) in self.submitted if lot == lot_id)
            firm = d(st.sampled_from(mine)) if mine else firm
            origin = self.origin(lot_id, firm)
            price = self.submitted.get((lot_id, firm), 1)
            if d(st.integers(0, 9)) == 0:
                price += 1  # a mismatch
            self.apply(RevealSealed(origin, self.seq(origin), lot_id, price, f"n-{firm}-{price}"))
        elif kind == "quote":
            best = lot.price_fen if lot.leader_id else lot.start_price_fen + 100
            amount = best - 100 * d(st.integers(1, 4))
            self.apply(PlaceBid(origin, self.seq(origin), "R1", amount))
        elif kind == "answer":
            cls = d(st.sampled_from((ConfirmAward, ConfirmAward, DeclineAward)))
            o = self.origin("R1", firm)
            self.apply(cls(o, self.seq(o), "R1"))
        elif kind == "revival":
            self.apply(AcceptRevival(origin, self.seq(origin), lot_id))
        elif kind == "regions":
            regions = d(st.permutations(("bj", "sh", "gd")))
            self.apply(ChooseRegions(origin, self.seq(origin), lot_id, tuple(regions)))
        elif kind == "score":
            member = f"committee:m{d(st.integers(1, 2))}"
            code = f"{FIRMS.index(firm) + 1:04d}"
            pts = d(st.integers(0, 7_000))
            self.apply(EnterScores(member, self.seq(member), "T1", code, pts))
        elif kind == "finalize":
            self.apply(FinalizeEvaluation(STAFF, self.seq(STAFF), "T1"))
        elif kind == "seed":
            if d(st.booleans()):
                self.apply(CommitDrawSeed(STAFF, self.seq(STAFF), lot_id, seed_hash(SEED)))
            else:
                self.apply(RevealDrawSeed(STAFF, self.seq(STAFF), lot_id, SEED))
        elif kind == "freeze":
            self.apply(FreezeLot(STAFF, self.seq(STAFF), lot_id, "fault"))
        elif kind == "resume":
            self.apply(ResumeLot(STAFF, self.seq(STAFF), lot_id, "fixed"))
        elif kind == "outage":
            due = self.router.next_deadline_ns()
            if due is not None:
                self.apply(SuspendOverdue(SYSTEM, 0), due + d(st.integers(0, WIN)))
        elif kind == "qualify":
            self.apply(QualifyWinner(STAFF, self.seq(STAFF), lot_id, d(st.booleans()), "r"))
        elif kind == "pay":
            self.apply(ConfirmPayment(SERVICE, self.seq(SERVICE), lot_id))
        elif kind == "default":
            self.apply(DeclareDefault(SERVICE, self.seq(SERVICE), lot_id, "no balance"))
        elif kind == "retry":
            earlier = [c for c, _, _ in self.log if c.origin != SYSTEM]
            self.apply(d(st.sampled_from(earlier)))


@settings(
    max_examples=200,
    # Shrinking these streams takes minutes; a failure prints its draws instead.
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_procurement_streams_replay_and_never_stick_a_deadline(data: st.DataObject) -> None:
    drv = Driver(data)
    drv.setup()
    drv.apply(Tick(SYSTEM, 0), START)
    for _ in range(data.draw(st.integers(20, 120))):
        drv.step()
    for _ in range(3):  # let whatever can fall due, fall due
        due = drv.router.next_deadline_ns()
        drv.apply(Tick(SYSTEM, 0), due if due is not None else drv.now + 1)

    for lot in drv.router.state.lots.values():
        event(f"{lot.lot_id}:{lot.status}:{lot.phase}:{lot.settlement}")
    full, _ = replay(drv.log, 0)
    assert full.state_hash() == drv.router.state_hash()
    cut = data.draw(st.integers(0, len(drv.log)))
    _, snap = replay(drv.log, cut)
    restored = Router.restore(snap)
    for cmd, at, ev_bytes in drv.log[cut:]:
        assert encode_events(restored.apply(cmd, at)) == ev_bytes
    assert restored.state_hash() == drv.router.state_hash()
    assert restored.next_deadline_ns() == drv.router.next_deadline_ns()
