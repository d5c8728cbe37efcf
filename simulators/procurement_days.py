"""Seeded procurement scenarios for ``pubex simulate``:

* ``vbp``: 40 drugs of a volume-based procurement round (RULES.md §4): each
  product with its ceiling, supply regions and 3-12 firms quoting sealed unit
  comparable prices; rounds 2-9, 10 and 11 rule sets in turn; firms offered
  the revival price accept it or not; winners state region preferences.
* ``emall-reverse``: 150 reverse price competitions of a government e-mall
  (RULES.md §3.2-3.3): suppliers with a cost floor quote down by the
  decrement; single-award lots (the winner confirms, or declines and the award
  passes on) and multi-winner lots (70/30, 50/30/20 shares re-offered when
  declined); some small and micro firms with the 10 % price deduction.
"""

from __future__ import annotations

from engine.messages import (
    AcceptRevival,
    AwardOffered,
    ChooseRegions,
    ConfirmAward,
    ConfirmDeposit,
    CreateLot,
    DeclineAward,
    Event,
    PlaceBid,
    PublishLot,
    RegionDemand,
    RegisterBidder,
    RevealSealed,
    RevivalOffered,
    SharesOffered,
    SubmitSealed,
    VbpAwarded,
)
from engine.rules import REVERSE, VBP_R9, VBP_R10, VBP_R11, RuleSet
from engine.sealed import seal_commitment
from simulators.harness import EPOCH_NS, HOUR_NS, MINUTE_NS, NS_PER_S, Harness

STAFF = "staff:sim"
PROVINCES = ("beijing", "tianjin", "hebei", "shanxi", "neimenggu", "liaoning", "jilin")


class _Base:
    def __init__(self, sim: Harness) -> None:
        self.sim = sim
        self.rng = sim.rng
        sim.listeners.append(lambda cmd, events: self.react(events, sim.now_ns))

    def react(self, events: list[Event], t_ns: int) -> None:
        """Answer what the events offer (overridden)."""

    def within(self, t_ns: int, until_ns: int) -> int:
        """A seeded moment in [t_ns, until_ns)."""
        return t_ns + self.rng.randrange(max(1, until_ns - t_ns))

    def staff(self, cmd_type: type, t_ns: int, *args: object, **kw: object) -> list[Event]:
        return self.sim.send(cmd_type(STAFF, self.sim.next_seq(STAFF), *args, **kw), t_ns)

    def act(self, origin: str, cmd_type: type, t_ns: int, *args: object) -> list[Event]:
        return self.sim.send(cmd_type(origin, self.sim.next_seq(origin), *args), t_ns)

    def register(self, lot_id: str, firm: str, t_ns: int, sme: bool = False) -> None:
        self.staff(RegisterBidder, t_ns, lot_id, firm, 0, sme)
        self.staff(ConfirmDeposit, t_ns, lot_id, firm, 0)


class VbpDay(_Base):
    PRODUCTS = 40
    RULES = (VBP_R9, VBP_R10, VBP_R11)

    def setup(self) -> None:
        t0 = EPOCH_NS + 8 * HOUR_NS
        self.firms: dict[str, list[str]] = {}
        for n in range(self.PRODUCTS):
            lot_id = f"V{n:03d}"
            rules = self.RULES[n % 3]
            ceiling = self.rng.randrange(5_000, 200_000)  # 0.0001 yuan per unit
            regions = tuple(
                RegionDemand(p, self.rng.randrange(1_000, 500_000))
                for p in self.rng.sample(PROVINCES, self.rng.randint(1, len(PROVINCES)))
            )
            deadline = t0 + 2 * HOUR_NS + n * MINUTE_NS
            self.staff(
                CreateLot,
                t0,
                lot_id,
                "vbp",
                f"带量采购 product {n}",
                ceiling,
                1,
                t0,
                deadline,
                rules=rules,
                regions=regions,
            )
            self.staff(PublishLot, t0, lot_id)
            firms = [f"pharma-{n:03d}-{i}" for i in range(self.rng.randint(3, 12))]
            self.firms[lot_id] = firms
            for firm in firms:
                self.register(lot_id, firm, t0)
                self._quote(lot_id, firm, ceiling, rules, t0, deadline)

    def _quote(
        self, lot_id: str, firm: str, ceiling: int, rules: RuleSet, t0: int, deadline: int
    ) -> None:
        rng = self.rng
        price = max(1, int(ceiling * rng.uniform(0.15, 1.05)))  # some above the ceiling
        nonce = f"{rng.getrandbits(96):024x}"
        origin = f"supplier:{firm}"
        commitment = seal_commitment(lot_id, price, nonce)
        self.sim.at(
            t0 + rng.randrange(deadline - t0),
            lambda t: self.act(origin, SubmitSealed, t, lot_id, commitment),
        )
        if rng.random() < 0.05:
            return  # never reveals: invalid
        reveal_at = deadline + rng.randrange(rules.reveal_window_ns)
        self.sim.at(
            reveal_at,
            lambda t: self._reveal(origin, lot_id, price, nonce, t),
        )

    def _reveal(self, origin: str, lot_id: str, price: int, nonce: str, t: int) -> None:
        self.act(origin, RevealSealed, t, lot_id, price, nonce)

    def react(self, events: list[Event], t_ns: int) -> None:
        """Firms answer revival offers and winners choose regions (seeded choices)."""
        for ev in events:
            if isinstance(ev, RevivalOffered):
                lot = self.sim.router.state.lots[ev.lot_id]
                by_code = {b.code: b_id for b_id, b in lot.bidders.items()}
                for w in lot.winners:  # a rule-1 winner accepts by mistake: refused
                    if self.rng.random() < 0.2:
                        origin = f"supplier:{w.bidder_id}"
                        self.sim.at(
                            self.within(t_ns, ev.until_ns),
                            lambda t, o=origin, lid=ev.lot_id: self.act(o, AcceptRevival, t, lid),
                        )
                for code in ev.bidder_codes:
                    if self.rng.random() < 0.6:
                        at = self.within(t_ns, ev.until_ns)
                        origin = f"supplier:{by_code[code]}"
                        self.sim.at(
                            at,
                            lambda t, o=origin, lid=ev.lot_id: self.act(o, AcceptRevival, t, lid),
                        )
            elif isinstance(ev, VbpAwarded) and ev.regions_until_ns > 0:
                lot = self.sim.router.state.lots[ev.lot_id]
                by_code = {b.code: b_id for b_id, b in lot.bidders.items()}
                names = list(lot.regions)
                for w in ev.winners:
                    prefs = tuple(self.rng.sample(names, self.rng.randint(1, len(names))))
                    at = self.within(t_ns, ev.regions_until_ns)
                    origin = f"supplier:{by_code[w.bidder_code]}"
                    self.sim.at(
                        at,
                        lambda t, o=origin, lid=ev.lot_id, pr=prefs: self.act(
                            o, ChooseRegions, t, lid, pr
                        ),
                    )


class EmallReverse(_Base):
    LOTS = 150

    def setup(self) -> None:
        t0 = EPOCH_NS + 9 * HOUR_NS
        for n in range(self.LOTS):
            lot_id = f"R{n:03d}"
            multi = n % 3 == 2
            rules = RuleSet(
                name="reverse-multi" if multi else "reverse",
                min_valid_bids=3,
                extension_window_ns=0,
                reverse_winners=self.rng.randint(2, 3) if multi else 1,
                sme_deduction_pct=10 if n % 2 else 0,
                confirm_window_ns=REVERSE.confirm_window_ns,
            )
            ceiling = self.rng.randrange(10_000, 2_000_000) * 100
            dec = max(100, ceiling // 200 // 100 * 100)
            end = t0 + 30 * MINUTE_NS + n * 20 * NS_PER_S
            self.staff(
                CreateLot,
                t0,
                lot_id,
                "reverse",
                f"网上竞价 requirement {n}",
                ceiling,
                dec,
                t0,
                end,
                rules=rules,
            )
            self.staff(PublishLot, t0, lot_id)
            for i in range(self.rng.randint(2, 8)):
                firm = f"supplier-{n:03d}-{i}"
                self.register(lot_id, firm, t0, sme=self.rng.random() < 0.3)
                floor = int(ceiling * self.rng.uniform(0.6, 0.97))
                self._quotes(lot_id, firm, ceiling, dec, floor, t0, end)

    def _quotes(
        self, lot_id: str, firm: str, ceiling: int, dec: int, floor: int, t0: int, end: int
    ) -> None:
        """A supplier with a cost floor: a few times in the window it undercuts the best by
        one to three decrements while that stays above its floor."""
        origin = f"supplier:{firm}"
        for _ in range(self.rng.randint(1, 4)):
            at = t0 + self.rng.randrange(end - t0)
            steps = self.rng.randint(1, 3)
            self.sim.at(
                at, lambda t, o=origin, s=steps: self._undercut(o, lot_id, dec, s, floor, t)
            )

    def _undercut(self, origin: str, lot_id: str, dec: int, steps: int, floor: int, t: int) -> None:
        lot = self.sim.router.state.lots[lot_id]
        best = lot.price_fen if lot.leader_id else lot.start_price_fen + dec
        if lot.leader_id and self.rng.random() < 0.05:
            steps = 0  # quotes the price it saw a moment ago: quote_not_below_best
        amount = best - steps * dec
        if amount >= floor:
            self.act(origin, PlaceBid, t, lot_id, amount)

    def react(self, events: list[Event], t_ns: int) -> None:
        for ev in events:
            offers: list[str] = []
            until = 0
            if isinstance(ev, AwardOffered):
                offers, until = [ev.bidder_code], ev.until_ns
            elif isinstance(ev, SharesOffered):
                offers, until = [o.bidder_code for o in ev.offers], ev.until_ns
            if not offers:
                continue
            lot = self.sim.router.state.lots[ev.lot_id]
            by_code = {b.code: b_id for b_id, b in lot.bidders.items()}
            for code in offers:
                fate = self.rng.random()
                if fate < 0.1:
                    continue  # lets the window pass
                cmd = DeclineAward if fate < 0.25 else ConfirmAward
                at = self.within(t_ns, until)
                origin = f"supplier:{by_code[code]}"
                self.sim.at(at, lambda t, o=origin, c=cmd, lid=ev.lot_id: self.act(o, c, t, lid))
