"""Theory of operation: the expert database and committed random draws
(专家库, RULES.md R-6.5).

The expert database (experts with specialties and a region, availability,
and their declared relations to market subjects: employment, shareholding,
family) is the registry's own data -- staff maintain it over the HTTP API; it
is not in the ledger.

A draw (R-6.5.4) runs in two durable steps:

1. **commit**: filter the pool -- specialty, region, available, not barred,
   not engaged on the review day, and no relation to any bidder of the lot
   (or to any subject named in ``avoid_subjects``: the purchaser, the agency)
   ongoing or ended within ``window_ns`` of the draw (3 years by default,
   财库〔2016〕198号) -- then generate a 32-byte seed with a CSPRNG
   (``secrets``) and store the draw with the sorted pool, its hash, the
   criteria and ``seed_hash(seed)`` (engine.draw's BLAKE2b).  The seed stays
   unpublished; the commitment is published.
2. **reveal**: the draw order is the pool sorted by
   ``draw_key(seed, draw_id, expert_id)`` (engine.draw's BLAKE2b of the
   seed, the draw and the candidate), the first ``count + alternates`` are
   called in that order; the seed is published with the result.

Anyone holding the draw record re-runs it (:func:`rerun`): the seed must hash
to the commitment and the pool to its hash, and the order follows.

Both steps are ledgered through the writer's outbox, each intent stored in the
same txn as the draw record it carries: step 1 queues ``CommitExpertDraw``
(seed hash, pool hash); step 2 is refused until that commitment is accepted
(so the ledger holds the commitment before anyone is drawn), then queues
``RevealExpertDraw`` (the seed and ``drawn_digest`` of who was drawn).  The
engine checks the seed against its committed hash; :func:`rerun_ledgered`
re-runs a draw from the seed the ledger holds and checks every hash.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import lmdb
import msgspec

from engine.draw import draw_key, seed_hash
from gateway.wire import protocol as p
from persistence.keys import key_part
from persistence.service import ServiceStore
from services.registry.model import (
    RELATION_KINDS,
    Draw,
    DrawCriteria,
    Expert,
    LedgerDraw,
    Relation,
)
from services.registry.projection import LDRAWS

if TYPE_CHECKING:
    from services.registry.writer import Outbox

Txn: TypeAlias = "lmdb.Transaction[bytes]"

EXPERTS = b"rg_experts"
RELATIONS = b"rg_relations"  # expert NUL subject NUL kind NUL until_ns -> Relation
DRAWS = b"rg_draws"
XMETA = b"rg_xmeta"
NEXT_DRAW = b"next_draw"
YEAR_NS = 365 * 24 * 3600 * 1_000_000_000
AVOIDANCE_WINDOW_NS = 3 * YEAR_NS

_mp = msgspec.msgpack.Encoder()
_expert = msgspec.msgpack.Decoder(Expert)
_relation = msgspec.msgpack.Decoder(Relation)
_draw = msgspec.msgpack.Decoder(Draw)


class DrawError(ValueError):
    """A draw that cannot be made (criteria, pool too small, unknown draw)."""


# ------------------------------------------------------------------ pure part


def conflicted(
    relations: Iterable[Relation], subjects: set[str], at_ns: int, window_ns: int
) -> dict[str, str]:
    """Expert id -> the first avoidance reason, for relations to ``subjects``
    ongoing at ``at_ns`` or ended less than ``window_ns`` before it."""
    out: dict[str, str] = {}
    for r in relations:
        if r.subject_id not in subjects or r.expert_id in out:
            continue
        if r.until_ns < 0 or r.until_ns >= at_ns - window_ns:
            out[r.expert_id] = f"avoidance: {r.kind} with {r.subject_id}"
    return out


def eligible(
    experts: Iterable[Expert],
    relations: Iterable[Relation],
    criteria: DrawCriteria,
    subjects: set[str],
    window_ns: int = AVOIDANCE_WINDOW_NS,
) -> tuple[list[str], dict[str, str]]:
    """The pool (sorted expert ids) and why every other expert is out of it."""
    avoid = conflicted(relations, subjects, criteria.at_ns, window_ns)
    pool: list[str] = []
    excluded: dict[str, str] = {}
    for e in experts:
        if criteria.specialty and criteria.specialty not in e.specialties:
            excluded[e.expert_id] = "specialty"
        elif criteria.region and e.region != criteria.region:
            excluded[e.expert_id] = "region"
        elif not e.available or e.barred:
            excluded[e.expert_id] = "unavailable" if not e.barred else "barred"
        elif criteria.day and criteria.day in e.engaged_days:
            excluded[e.expert_id] = f"engaged on {criteria.day}"
        elif e.expert_id in avoid:
            excluded[e.expert_id] = avoid[e.expert_id]
        else:
            pool.append(e.expert_id)
    pool.sort()
    return pool, excluded


def pool_digest(draw_id: str, criteria: DrawCriteria, pool: Sequence[str]) -> str:
    """BLAKE2b-256 over the draw id, its criteria and the sorted pool (hex)."""
    body = msgspec.json.encode([draw_id, criteria, list(pool)])
    return hashlib.blake2b(body, digest_size=32).hexdigest()


def draw_order(seed_hex: str, draw_id: str, pool: Sequence[str], n: int) -> list[str]:
    """The first ``n`` of the pool in draw order (smaller draw key first)."""
    return sorted(pool, key=lambda e: draw_key(seed_hex, draw_id, e))[:n]


def drawn_digest(draw_id: str, drawn: Sequence[str]) -> str:
    """BLAKE2b-256 over the draw id and who was drawn, in order (hex)."""
    return hashlib.blake2b(msgspec.json.encode([draw_id, list(drawn)]), digest_size=32).hexdigest()


def rerun_ledgered(draw: Draw, ledgered: LedgerDraw) -> list[str]:
    """Re-run a draw from the seed the LEDGER holds: the record's pool must hash
    to the ledgered pool hash, the ledgered seed to the ledgered commitment
    (made before the reveal), and the result to the ledgered drawn hash."""
    if not ledgered.reveal_seq or not ledgered.seed_hex:
        raise DrawError(f"draw {draw.draw_id} is not revealed in the ledger")
    if ledgered.commit_seq >= ledgered.reveal_seq:
        raise DrawError("the ledger holds the reveal before the commitment")
    if seed_hash(ledgered.seed_hex) != ledgered.seed_hash:
        raise DrawError("the ledgered seed does not match the ledgered commitment")
    if pool_digest(draw.draw_id, draw.criteria, draw.pool) != ledgered.pool_hash:
        raise DrawError("the pool does not match the ledgered pool hash")
    c = draw.criteria
    drawn = draw_order(ledgered.seed_hex, draw.draw_id, draw.pool, c.count + c.alternates)
    if drawn_digest(draw.draw_id, drawn) != ledgered.drawn_hash:
        raise DrawError("the re-run does not match the ledgered drawn hash")
    return drawn


def rerun(draw: Draw) -> list[str]:
    """Re-run a revealed draw from its record; raises DrawError if the seed
    does not match the commitment or the pool its hash."""
    if draw.state != "revealed":
        raise DrawError(f"draw {draw.draw_id} is not revealed yet")
    if seed_hash(draw.seed_hex) != draw.seed_hash:
        raise DrawError("the revealed seed does not match the committed hash")
    if pool_digest(draw.draw_id, draw.criteria, draw.pool) != draw.pool_hash:
        raise DrawError("the pool does not match its committed hash")
    c = draw.criteria
    return draw_order(draw.seed_hex, draw.draw_id, draw.pool, c.count + c.alternates)


# ------------------------------------------------------------------ the store


class ExpertBook:
    """The expert database and the draws, in the registry's store."""

    dbs = (EXPERTS, RELATIONS, DRAWS, XMETA, LDRAWS)  # LDRAWS: the projection's, read here

    def __init__(self, store: ServiceStore, window_ns: int = AVOIDANCE_WINDOW_NS) -> None:
        self.store = store
        self.window_ns = window_ns
        for name in self.dbs:
            store.add_db(name)

    def _db(self, name: bytes) -> Any:
        return self.store.db(name)

    # -- experts and relations ----------------------------------------------------
    def put_expert(self, expert: Expert) -> None:
        if not expert.expert_id or not expert.specialties:
            raise DrawError("an expert needs an id and at least one specialty")
        self.store.write(
            lambda txn: txn.put(
                key_part(expert.expert_id), _mp.encode(expert), db=self._db(EXPERTS)
            )
        )

    def put_experts(self, experts: Sequence[Expert]) -> None:
        def write(txn: Txn) -> None:
            for e in experts:
                txn.put(key_part(e.expert_id), _mp.encode(e), db=self._db(EXPERTS))

        self.store.write(write)

    def expert(self, expert_id: str) -> Expert | None:
        with self.store.read() as txn:
            raw = txn.get(key_part(expert_id), db=self._db(EXPERTS))
        return None if raw is None else _expert.decode(raw)

    def experts(self) -> list[Expert]:
        with self.store.read() as txn:
            return [_expert.decode(v) for _, v in txn.cursor(self._db(EXPERTS))]

    def add_relations(self, relations: Sequence[Relation]) -> None:
        for r in relations:
            if r.kind not in RELATION_KINDS or not r.expert_id or not r.subject_id:
                raise DrawError(
                    f"a relation needs an expert, a subject and a kind {RELATION_KINDS}"
                )

        def write(txn: Txn) -> None:
            for r in relations:
                # every declaration is kept: one ongoing and one ended relation
                # of the same kind are two facts, not one overwriting the other
                key = (
                    b"\x00".join((key_part(r.expert_id), key_part(r.subject_id), key_part(r.kind)))
                    + f"\x00{r.until_ns}".encode()
                )
                txn.put(key, _mp.encode(r), db=self._db(RELATIONS))

        self.store.write(write)

    def relations(self, expert_id: str = "") -> list[Relation]:
        prefix = key_part(expert_id) + b"\x00" if expert_id else b""
        out: list[Relation] = []
        with self.store.read() as txn:
            cur = txn.cursor(self._db(RELATIONS))
            if not (cur.set_range(prefix) if prefix else cur.first()):
                return out
            for k, v in cur:
                if prefix and not k.startswith(prefix):
                    break
                out.append(_relation.decode(v))
        return out

    # -- draws ------------------------------------------------------------------
    def commit(
        self,
        criteria: DrawCriteria,
        bidders: Iterable[str],
        outbox: Outbox | None = None,
        actor: str = "",
    ) -> Draw:
        """Step 1: filter the pool, commit a fresh CSPRNG seed's hash (durable);
        with an ``outbox``, CommitExpertDraw is queued in the same txn.  Draw ids
        the ledger already holds (a rebuilt store) are skipped."""
        c = criteria
        if c.count <= 0 or c.alternates < 0:
            raise DrawError("count must be positive and alternates not negative")
        if c.region and not c.region_reason:
            raise DrawError("a restricted region needs its reason (R-6.5.2)")
        subjects = set(bidders) | set(c.avoid_subjects)
        pool, excluded = eligible(self.experts(), self.relations(), c, subjects, self.window_ns)
        if len(pool) < c.count:
            raise DrawError(
                f"pool insufficient: {len(pool)} eligible, {c.count} needed "
                "(widen the region with a reason, R-6.5.4)"
            )
        seed_hex = secrets.token_hex(32)
        made: list[Draw] = []

        def write(txn: Txn) -> None:
            made.clear()
            raw = txn.get(NEXT_DRAW, db=self._db(XMETA))
            n = 1 if raw is None else int.from_bytes(raw, "big")
            while any(txn.get(f"D{n:06d}".encode(), db=self._db(db)) for db in (DRAWS, LDRAWS)):
                n += 1  # a rebuilt store: the ledger already holds this id
            draw_id = f"D{n:06d}"
            d = Draw(
                draw_id=draw_id,
                criteria=c,
                window_ns=self.window_ns,
                pool=pool,
                excluded=excluded,
                pool_hash=pool_digest(draw_id, c, pool),
                seed_hash=seed_hash(seed_hex),
                committed_ns=c.at_ns,
                seed_hex=seed_hex,  # kept secret until the reveal (see public())
            )
            if outbox is not None:
                frame = p.CommitExpertDrawFrame(
                    0, draw_id, c.lot_id, d.seed_hash, d.pool_hash, actor=actor
                )
                [d.commit_cs] = outbox.add_in(txn, [(_frame(frame), f"draw commit {draw_id}")])
            txn.put(key_part(draw_id), _mp.encode(d), db=self._db(DRAWS))
            txn.put(NEXT_DRAW, (n + 1).to_bytes(8, "big"), db=self._db(XMETA))
            made.append(d)

        self.store.write(write)
        return made[0]

    def reveal(
        self, draw_id: str, now_ns: int, outbox: Outbox | None = None, actor: str = ""
    ) -> Draw:
        """Step 2: draw count + alternates in order and publish the seed; with an
        ``outbox``, RevealExpertDraw is queued in the same txn (once: a second
        reveal is a read).  The caller checks the commitment is ledgered."""
        out: list[Draw] = []

        def write(txn: Txn) -> None:
            out.clear()
            raw = txn.get(key_part(draw_id), db=self._db(DRAWS))
            if raw is None:
                raise DrawError(f"unknown draw {draw_id}")
            d = _draw.decode(raw)
            if d.state == "committed":
                c = d.criteria
                d.drawn = draw_order(d.seed_hex, d.draw_id, d.pool, c.count + c.alternates)
                d.drawn_hash = drawn_digest(d.draw_id, d.drawn)
                d.revealed_ns = now_ns
                d.state = "revealed"
                if outbox is not None:
                    frame = p.RevealExpertDrawFrame(
                        0, d.draw_id, d.seed_hex, d.drawn_hash, actor=actor
                    )
                    [d.reveal_cs] = outbox.add_in(txn, [(_frame(frame), f"draw reveal {draw_id}")])
                txn.put(key_part(draw_id), _mp.encode(d), db=self._db(DRAWS))
            out.append(d)

        self.store.write(write)
        return out[0]

    def draw(self, draw_id: str) -> Draw | None:
        with self.store.read() as txn:
            raw = txn.get(key_part(draw_id), db=self._db(DRAWS))
        return None if raw is None else _draw.decode(raw)

    def draws(self) -> list[Draw]:
        with self.store.read() as txn:
            return [_draw.decode(v) for _, v in txn.cursor(self._db(DRAWS))]


def _frame(frame: p.StaffFrame) -> dict[str, object]:
    d: dict[str, object] = msgspec.to_builtins(frame)
    return d


def public(draw: Draw) -> Draw:
    """What staff and the public see: no seed and no names before the reveal."""
    if draw.state == "revealed":
        return draw
    return msgspec.structs.replace(draw, seed_hex="", drawn=[])
