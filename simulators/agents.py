"""Theory of operation: seeded bidder agents, shared by in-process and live runs.

A *scenario definition* (``ScenarioDef``) is plain data: lots (terms, rules,
start and end as offsets from the run's start), and agents (bidder id, key
id, lot, strategy, private valuation, device).  The same definition drives

* ``pubex simulate --scenario hot-land-agents|auction-agents|reverse-agents``:
  the in-process driver below (``AgentScenario``) on the harness's virtual
  time, and
* live runs against ``pubex serve``: ``bench/locust`` provisions the same
  lots, keys, registrations and deposits over a staff WebSocket and each
  Locust user drives one agent over a real WebSocket connection.

This module is trio-free and I/O-free (Locust's gevent processes import it).

Agents see what any bidder sees -- the lot's public state (``View``: price,
leader code, increment, end, phase) and their own bidder code -- and decide
from that alone.  Each agent draws from its own ``random.Random`` seeded by
(scenario seed, bidder, lot), so its choices never depend on how the other
agents' actions interleave: in-process, the same seed gives the same ledger
byte for byte; live, the same seed gives the same valuations, strategies and
the same decision for the same observed state.

Times inside a strategy are fractions of the lot's *tempo* (the countdown of
a listing's timed phase, the anti-sniping window of an English lot, a tenth
of a reverse lot's quote window), so a definition compressed for a 60-second
live run keeps its shape.

Strategies (``AgentSpec.strategy``):

* ``incremental`` -- the next valid price when outbid, up to its valuation,
  at a few random times and after some outbids; joins the bursts near each
  countdown end.
* ``jump`` -- like incremental but often several increments at once.
* ``sniper`` -- silent until the last part of the countdown / anti-sniping
  window, then one increment; again after every extension.
* ``proxy`` -- answers every outbid quickly with the minimum raise, up to its
  maximum (``valuation_fen``).
* ``supplier`` -- reverse competition: quotes down by the decrement while
  above its cost floor (``valuation_fen``); confirms the award it is offered
  (or, rarely, declines).
* ``ring`` -- a colluding ring: members share one device id (and IP), bid in
  a fixed turn order, each exactly one increment over the previous member
  ("ladder prices"), and stop low.  What the supervision rules (same device
  on one lot, laddered bids) must flag.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
from nacl.signing import SigningKey

from engine.messages import (
    AwardOffered,
    BidAccepted,
    Command,
    ConfirmAward,
    ConfirmDeposit,
    CreateLot,
    DeclineAward,
    Event,
    LotExtended,
    PhaseChanged,
    PlaceBid,
    PublishLot,
    RegisterBidder,
    RegisterKey,
    SetReserve,
)
from engine.rules import JIANGSU, JUDICIAL, REVERSE, RuleSet
from simulators.harness import EPOCH_NS, HOUR_NS, MINUTE_NS, NS_PER_S, Harness

YUAN = 100  # fen
STRATEGIES = ("incremental", "jump", "sniper", "proxy", "supplier", "ring")
BID_PHASES = frozenset({"bidding", "listing", "timed", "quoting"})
SIM_USER_AGENT = "pubex-agent"


# ------------------------------------------------------------ definitions


@dataclass(frozen=True)
class LotSpec:
    lot: str
    mechanism: str  # english | listing | reverse
    title: str
    start_price_fen: int  # reverse: the ceiling
    increment_fen: int  # reverse: the decrement
    start_offset_ns: int  # from the run's start (t0)
    duration_ns: int  # listing: the listing period; then the timed countdowns
    rules: RuleSet
    deposit_fen: int = 0
    reserve_fen: int = 0

    @property
    def tempo_ns(self) -> int:
        if self.mechanism == "listing":
            return self.rules.countdown_ns
        if self.mechanism == "reverse":
            return max(NS_PER_S, self.duration_ns // 10)
        return self.rules.extension_window_ns or max(NS_PER_S, self.duration_ns // 10)


@dataclass(frozen=True)
class AgentSpec:
    bidder: str
    key_id: str
    lot: str
    strategy: str
    valuation_fen: int  # the most it pays (proxy: its maximum); supplier: its cost floor
    device: str
    ip: str = "127.0.0.1"
    ring: str = ""  # ring name (strategy "ring")
    ring_rank: int = 0
    ring_size: int = 0


@dataclass(frozen=True)
class ScenarioDef:
    name: str
    seed: int
    lots: tuple[LotSpec, ...]
    agents: tuple[AgentSpec, ...]

    def lot(self, lot_id: str) -> LotSpec:
        return self._lots()[lot_id]

    def _lots(self) -> dict[str, LotSpec]:
        return {spec.lot: spec for spec in self.lots}


def agent_key(seed: int, key_id: str) -> SigningKey:
    """An agent's Ed25519 key, derived from the seed (provisioner and user agree)."""
    digest = hashlib.blake2b(f"pubex-agent-key|{seed}|{key_id}".encode(), digest_size=32)
    return SigningKey(digest.digest())


def fingerprint(device: str, user_agent: str = SIM_USER_AGENT) -> str:
    """The gateway's device fingerprint (gateway.edge.auth): BLAKE2b-64 of UA|device."""
    return hashlib.blake2b(f"{user_agent}|{device}".encode(), digest_size=8).hexdigest()


def _with(rules: RuleSet, **changes: Any) -> RuleSet:
    fields = {f: getattr(rules, f) for f in rules.__struct_fields__}
    return RuleSet(**{**fields, **changes})


def hot_land(
    seed: int,
    *,
    bidders: int = 30,
    listing_ns: int = 2 * HOUR_NS,
    countdown_ns: int = 4 * MINUTE_NS,
    quote_freeze_ns: int = HOUR_NS,
    start_offset_ns: int = HOUR_NS,
    lot_id: str = "LAND-2026-001",
) -> ScenarioDef:
    """One Jiangsu-style land listing, ``bidders`` developers: a few listing
    quotes, then timed bidding where every bid restarts the countdown and the
    bids burst near each countdown end."""
    rng = random.Random(f"hot-land|{seed}")
    start_fen = 1_000_000_000 * YUAN
    inc = 5_000_000 * YUAN
    rules = _with(
        JIANGSU, countdown_ns=countdown_ns, quote_freeze_ns=quote_freeze_ns, reserve_cutoff_ns=0
    )
    lot = LotSpec(
        lot_id,
        "listing",
        "Plot 2026-001, residential",
        start_fen,
        inc,
        start_offset_ns,
        listing_ns,
        rules,
        deposit_fen=200_000_000 * YUAN,
        reserve_fen=start_fen * 11 // 10,
    )
    mix = ("incremental",) * 4 + ("jump", "sniper", "sniper", "proxy")
    agents = []
    for i in range(bidders):
        bidder = f"developer-{i:02d}"
        value = int(start_fen * rng.uniform(1.2, 1.9)) // inc * inc
        agents.append(
            AgentSpec(bidder, f"key-{bidder}", lot_id, mix[i % len(mix)], value, f"dev-{bidder}")
        )
    return ScenarioDef("hot-land-agents", seed, (lot,), tuple(agents))


def auction_day(
    seed: int,
    *,
    lots: int = 200,
    duration_ns: int = 24 * HOUR_NS,
    extension_window_ns: int = 5 * MINUTE_NS,
    start_offset_ns: int = 2 * HOUR_NS,
    ring_every: int = 10,
) -> ScenarioDef:
    """English lots (judicial rules) with every bidder strategy; every
    ``ring_every``-th lot also has a colluding ring of three."""
    rng = random.Random(f"auction-day|{seed}")
    rules = _with(JUDICIAL, extension_window_ns=extension_window_ns, reserve_cutoff_ns=0)
    specs, agents = [], []
    for n in range(lots):
        lot_id = f"E{n:04d}"
        start_fen = rng.randrange(20_000, 5_000_000) * YUAN
        inc = max(100 * YUAN, start_fen // 100 // (100 * YUAN) * (100 * YUAN))
        specs.append(
            LotSpec(
                lot_id,
                "english",
                f"Auction lot {n}",
                start_fen,
                inc,
                start_offset_ns + (n % 30) * (duration_ns // 200),
                duration_ns,
                rules,
                deposit_fen=start_fen // 10,
                reserve_fen=start_fen * 12 // 10 if n % 7 == 0 else 0,
            )
        )
        for i in range(rng.randint(2, 9)):
            bidder = f"person-{n:04d}-{i:02d}"
            strategy = rng.choice(("incremental", "incremental", "jump", "sniper", "proxy"))
            value = int(start_fen * rng.uniform(0.95, 1.8)) // inc * inc
            agents.append(AgentSpec(bidder, f"key-{bidder}", lot_id, strategy, value, bidder))
        if ring_every and n % ring_every == 0:
            ring = f"ring-{n:04d}"
            ceiling = int(start_fen * rng.uniform(1.2, 1.5)) // inc * inc
            for r in range(3):
                bidder = f"{ring}-{r}"
                agents.append(
                    AgentSpec(
                        bidder,
                        f"key-{bidder}",
                        lot_id,
                        "ring",
                        ceiling + (inc if r == 0 else 0),  # the designated winner goes one more
                        f"device-{ring}",  # one device (and IP) for the whole ring
                        "10.9.8.7",
                        ring,
                        r,
                        3,
                    )
                )
    return ScenarioDef("auction-agents", seed, tuple(specs), tuple(agents))


def reverse_day(
    seed: int,
    *,
    lots: int = 60,
    duration_ns: int = 2 * HOUR_NS,
    confirm_window_ns: int = 4 * HOUR_NS,
    start_offset_ns: int = HOUR_NS,
) -> ScenarioDef:
    """Reverse price competitions: suppliers quote down to their cost floors."""
    rng = random.Random(f"reverse-day|{seed}")
    rules = _with(REVERSE, confirm_window_ns=confirm_window_ns)
    specs, agents = [], []
    for n in range(lots):
        lot_id = f"P{n:03d}"
        ceiling = rng.randrange(100_000, 5_000_000) * YUAN
        dec = max(100 * YUAN, ceiling // 200 // (100 * YUAN) * (100 * YUAN))
        specs.append(
            LotSpec(
                lot_id,
                "reverse",
                f"采购 Purchase {lot_id}",
                ceiling,
                dec,
                start_offset_ns + n * MINUTE_NS,
                duration_ns,
                rules,
            )
        )
        for i in range(rng.randint(2, 8)):
            bidder = f"supplier-{n:03d}-{i}"
            floor = int(ceiling * rng.uniform(0.6, 0.97))
            agents.append(AgentSpec(bidder, f"key-{bidder}", lot_id, "supplier", floor, bidder))
    return ScenarioDef("reverse-agents", seed, tuple(specs), tuple(agents))


DEFINITIONS: dict[str, Callable[[int], ScenarioDef]] = {
    "hot-land-agents": hot_land,
    "auction-agents": auction_day,
    "reverse-agents": reverse_day,
}


# ----------------------------------------------------------- observation


@dataclass(frozen=True)
class View:
    """A lot's public state, as a snapshot shows it (no reserve, codes only)."""

    status: str
    phase: str
    mechanism: str
    price_fen: int
    start_price_fen: int
    increment_fen: int
    leader_code: str
    bid_count: int
    end_ns: int

    @classmethod
    def from_snapshot(cls, s: Any) -> View:
        return cls(
            s.status,
            s.phase,
            s.mechanism,
            s.price_fen,
            s.start_price_fen,
            s.increment_fen,
            s.leader_code,
            s.bid_count,
            s.end_ns,
        )

    @classmethod
    def from_lot(cls, lot: Any) -> View:
        inc = lot.increment_fen
        if lot.phase == "timed" and lot.timed_increment_fen:
            inc = lot.timed_increment_fen
        return cls(
            lot.status,
            lot.phase,
            lot.mechanism,
            lot.price_fen,
            lot.start_price_fen,
            inc,
            lot.leader_code,
            lot.bid_count,
            lot.end_ns,
        )


@dataclass(frozen=True)
class Action:
    kind: str  # bid | confirm | decline
    amount_fen: int = 0


# ---------------------------------------------------------------- agents


@dataclass
class Agent:
    """One bidder's strategy on one lot: ``plan`` gives its first wake-ups,
    ``react`` is told every public change of its lot and may ask for a
    wake-up, ``step`` runs at a wake-up and may act."""

    spec: AgentSpec
    lot: LotSpec
    seed: int
    ring_codes: dict[int, str] = field(default_factory=dict)  # shared by a ring's members
    rng: random.Random = field(init=False)
    _planned_end: int = field(default=-1, init=False)
    _confirmed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(f"{self.seed}|{self.spec.bidder}|{self.spec.lot}")

    @property
    def strategy(self) -> str:
        return self.spec.strategy

    def _frac(self, lo: float, hi: float) -> int:
        return max(1, int(self.lot.tempo_ns * self.rng.uniform(lo, hi)))

    # -- planning ----------------------------------------------------------
    def plan(self, start_ns: int, end_ns: int) -> list[int]:
        """Initial wake-up times for a lot open over [start_ns, end_ns)."""
        rng, s = self.rng, self.strategy
        span = max(1, end_ns - start_ns - self.lot.tempo_ns)
        if self.lot.mechanism == "listing":  # a few quotes; the fight is in the timed phase
            freeze = self.lot.rules.quote_freeze_ns
            span = max(1, end_ns - start_ns - freeze)
            return [start_ns + rng.randrange(span)] if rng.random() < 0.15 else []
        if s in ("incremental", "jump", "supplier"):
            return sorted(start_ns + rng.randrange(span) for _ in range(rng.randint(1, 3)))
        if s == "proxy":
            return [start_ns + rng.randrange(max(1, span // 2))]
        if s == "ring" and self.spec.ring_rank == 0:  # the ring opens early
            return [start_ns + rng.randrange(max(1, span // 20))]
        if s == "sniper" and self.lot.mechanism != "listing":
            self._planned_end = end_ns
            return [end_ns - self._frac(0.01, 0.2)]
        return []  # snipers on a listing wait for the timed phase; ring members react

    def react(self, view: View, my_code: str, now_ns: int) -> int | None:
        """A public change of the lot: maybe a wake-up time."""
        rng, s = self.rng, self.strategy
        if s == "supplier" and view.phase == "confirming" and view.leader_code == my_code:
            return now_ns + self._frac(0.01, 0.1)  # the award is offered to us
        if view.status != "open" or view.phase not in BID_PHASES:
            return None
        if my_code and view.leader_code == my_code:
            return None
        if view.phase == "listing":
            return None  # listing quotes come at planned times only
        closing = view.end_ns - now_ns <= self.lot.tempo_ns
        if s == "ring":
            return self._ring_wake(view, now_ns)
        if s == "proxy":
            return now_ns + self._frac(0.02, 0.3)
        if s == "sniper":
            if closing and view.end_ns != self._planned_end:
                self._planned_end = view.end_ns
                return max(now_ns + 1, view.end_ns - self._frac(0.01, 0.15))
            return None
        if s == "supplier":
            return now_ns + self._frac(0.05, 0.4) if rng.random() < 0.7 else None
        # incremental / jump: a burst near each countdown end, or a later look
        if closing:
            if rng.random() < 0.35:
                lead = int(self.lot.tempo_ns * 0.9 * rng.random() ** 3)
                return max(now_ns + 1, view.end_ns - 1 - lead)
            return None
        return now_ns + self._frac(0.1, 2.0) if rng.random() < 0.3 else None

    def _ring_wake(self, view: View, now_ns: int) -> int | None:
        rank, size = self.spec.ring_rank, self.spec.ring_size
        before = self.ring_codes.get((rank - 1) % size, "")
        members = set(self.ring_codes.values())
        if view.leader_code and view.leader_code == before:
            return now_ns + self._frac(0.002, 0.01)  # my turn on the ladder: at once
        if rank == 0 and view.leader_code not in members and self.rng.random() < 0.5:
            return now_ns + self._frac(0.05, 0.3)  # the ring answers an outsider
        return None

    def _ring_turn(self, view: View) -> bool:
        rank, size = self.spec.ring_rank, self.spec.ring_size
        members = set(self.ring_codes.values())
        if view.leader_code not in members:
            return rank == 0
        return view.leader_code == self.ring_codes.get((rank - 1) % size, "")

    def latency_ns(self) -> int:
        """In-process runs: the network delay between deciding and arriving, so
        bursts race on stale prices as they do live."""
        return int(self.rng.uniform(0.005, 0.25) * NS_PER_S)

    # -- acting ------------------------------------------------------------
    def step(self, view: View, my_code: str, now_ns: int) -> Action | None:
        s = self.strategy
        if s == "supplier" and view.phase == "confirming":
            if view.leader_code != my_code or not my_code or self._confirmed:
                return None
            self._confirmed = True
            return Action("decline" if self.rng.random() < 0.1 else "confirm")
        if view.status != "open" or view.phase not in BID_PHASES:
            return None
        if my_code and view.leader_code == my_code:
            return None
        if view.phase == "listing" and now_ns >= view.end_ns - self.lot.rules.quote_freeze_ns:
            return None
        if s == "ring" and not self._ring_turn(view):
            return None
        steps = 1
        if s == "jump" and self.rng.random() < 0.6:
            steps = self.rng.choice((2, 3, 5, 10))
        amount = self.amount(view, steps)
        return None if amount is None else Action("bid", amount)

    def amount(self, view: View, steps: int) -> int | None:
        """The price ``steps`` increments past the current one, within the valuation."""
        inc, limit = view.increment_fen, self.spec.valuation_fen
        if view.mechanism == "reverse":
            base = view.start_price_fen if not view.leader_code else view.price_fen - inc
            if base < limit:
                return None
            return base - min(steps - 1, (base - limit) // inc) * inc
        base = view.start_price_fen if not view.leader_code else view.price_fen + inc
        if base > limit:
            return None
        return base + min(steps - 1, (limit - base) // inc) * inc


def make_agents(definition: ScenarioDef) -> list[Agent]:
    """One Agent per spec; a ring's members share one ``ring_codes`` table."""
    lots = definition._lots()
    rings: dict[str, dict[int, str]] = {}
    agents = []
    for spec in definition.agents:
        codes = rings.setdefault(spec.ring, {}) if spec.ring else {}
        agents.append(Agent(spec, lots[spec.lot], definition.seed, codes))
    return agents


# ------------------------------------------------------------ provisioning


@dataclass(frozen=True)
class StaffOp:
    """One staff / registry command of the provisioning, wire-neutral: ``op`` is
    the protocol frame's ``type`` and ``args`` its fields (without client_seq)."""

    op: str
    args: dict[str, Any]


def provisioning(definition: ScenarioDef, t0_ns: int, *, keys: bool = True) -> Iterator[StaffOp]:
    """Lots, keys, registrations and confirmed deposits, in a valid order."""
    for spec in definition.lots:
        start = t0_ns + spec.start_offset_ns
        yield StaffOp(
            "create_lot",
            {
                "lot": spec.lot,
                "mechanism": spec.mechanism,
                "title": spec.title,
                "start_price_fen": spec.start_price_fen,
                "increment_fen": spec.increment_fen,
                "start_ns": start,
                "end_ns": start + spec.duration_ns,
                "rules": spec.rules,
                "deposit_fen": spec.deposit_fen,
            },
        )
        yield StaffOp("publish_lot", {"lot": spec.lot})
        if spec.reserve_fen:
            yield StaffOp("set_reserve", {"lot": spec.lot, "reserve_fen": spec.reserve_fen})
    deposits = {spec.lot: spec.deposit_fen for spec in definition.lots}
    seen: set[str] = set()
    for a in definition.agents:
        if keys and a.key_id not in seen:
            seen.add(a.key_id)
            public = agent_key(definition.seed, a.key_id).verify_key.encode().hex()
            yield StaffOp(
                "register_key", {"key": a.key_id, "bidder": a.bidder, "public_key_hex": public}
            )
        yield StaffOp("register_bidder", {"lot": a.lot, "bidder": a.bidder})
        yield StaffOp(
            "confirm_deposit", {"lot": a.lot, "bidder": a.bidder, "amount_fen": deposits[a.lot]}
        )


_ENGINE_OPS: dict[str, Callable[..., Command]] = {
    "create_lot": lambda o, s, a: CreateLot(
        o,
        s,
        a["lot"],
        a["mechanism"],
        a["title"],
        a["start_price_fen"],
        a["increment_fen"],
        a["start_ns"],
        a["end_ns"],
        rules=a["rules"],
        deposit_fen=a["deposit_fen"],
    ),
    "publish_lot": lambda o, s, a: PublishLot(o, s, a["lot"]),
    "set_reserve": lambda o, s, a: SetReserve(o, s, a["lot"], a["reserve_fen"]),
    "register_key": lambda o, s, a: RegisterKey(o, s, a["key"], a["bidder"], a["public_key_hex"]),
    "register_bidder": lambda o, s, a: RegisterBidder(o, s, a["lot"], a["bidder"]),
    "confirm_deposit": lambda o, s, a: ConfirmDeposit(o, s, a["lot"], a["bidder"], a["amount_fen"]),
}


def engine_command(op: StaffOp, origin: str, client_seq: int) -> Command:
    return _ENGINE_OPS[op.op](origin, client_seq, op.args)


# ------------------------------------------------------ in-process driver

STAFF = "staff:sim"
_meta = msgspec.msgpack.Encoder()
_WATCHED = (BidAccepted, LotExtended, PhaseChanged, AwardOffered)


class AgentScenario:
    """Drives a ``ScenarioDef`` on the harness: provisioning as ledgered staff
    commands, then every agent on virtual time.  Each agent command carries
    the envelope a live connection would ledger (role, key id, IP, device
    fingerprint), so supervision sees the same thing in both runs."""

    build: Callable[[int], ScenarioDef] = staticmethod(hot_land)  # type: ignore[assignment]

    def __init__(self, sim: Harness) -> None:
        self.sim = sim

    def setup(self) -> None:
        sim = self.sim
        self.definition = self.build(sim.rng.getrandbits(32))
        self.t0 = EPOCH_NS + 8 * HOUR_NS
        for op in provisioning(self.definition, self.t0):
            sim.send(engine_command(op, STAFF, sim.next_seq(STAFF)), self.t0)
        self.agents = make_agents(self.definition)
        self.by_lot: dict[str, list[Agent]] = {}
        for agent in self.agents:
            self.by_lot.setdefault(agent.spec.lot, []).append(agent)
            if agent.spec.ring:
                agent.ring_codes[agent.spec.ring_rank] = self._code(agent)
            spec = agent.lot
            start = self.t0 + spec.start_offset_ns
            for t in agent.plan(start, start + spec.duration_ns):
                sim.at(t, self._wake(agent))
        sim.listeners.append(self._on_events)

    def _code(self, agent: Agent) -> str:
        b = self.sim.router.state.lots[agent.spec.lot].bidders.get(agent.spec.bidder)
        return b.code if b is not None else ""

    def _view(self, lot_id: str) -> View:
        return View.from_lot(self.sim.router.state.lots[lot_id])

    def _on_events(self, cmd: Command, events: list[Event]) -> None:
        touched = {ev.lot_id for ev in events if isinstance(ev, _WATCHED)}
        for lot_id in sorted(touched):
            view = self._view(lot_id)
            for agent in self.by_lot.get(lot_id, ()):
                t = agent.react(view, self._code(agent), self.sim.now_ns)
                if t is not None:
                    self.sim.at(t, self._wake(agent))

    def _wake(self, agent: Agent) -> Callable[[int], None]:
        def act(t: int) -> None:
            action = agent.step(self._view(agent.spec.lot), self._code(agent), t)
            if action is not None:  # decided on what it saw; arrives a network delay later
                self.sim.at(t + agent.latency_ns(), lambda t2: self.send(agent, action, t2))

        return act

    def send(self, agent: Agent, action: Action, t: int) -> None:
        spec = agent.spec
        origin = f"bidder:{spec.bidder}"
        seq = self.sim.next_seq(origin)
        cmd: Command
        if action.kind == "bid":
            cmd = PlaceBid(origin, seq, spec.lot, action.amount_fen)
        elif action.kind == "confirm":
            cmd = ConfirmAward(origin, seq, spec.lot)
        else:
            cmd = DeclineAward(origin, seq, spec.lot)
        # the gateway's Envelope (role, identity, ip, fingerprint, payload, sig), array-like
        meta = _meta.encode(["bidder", spec.key_id, spec.ip, fingerprint(spec.device), "", ""])
        self.sim.send(cmd, t, meta)


def agent_scenario(name: str, build: Callable[[int], ScenarioDef]) -> type[AgentScenario]:
    return type(name, (AgentScenario,), {"build": staticmethod(build)})
