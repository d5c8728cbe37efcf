"""``pubex registry``: the registry service as its own process.

Follows ``DATA/ledger`` read-only with the shared follower (its projection and
position in ``DATA/registry``, its own LMDB store), submits its writes through
the gateway as a service (``--ws URL --token T``; without them it is
read-only), and serves staff on its own HTTP port (hypercorn + Starlette in
the same trio.run).  JSON in and out:

* ``GET  /api/subjects?after=ID&limit=N``, ``GET /api/subjects/{id}`` (keys)
* ``POST /api/keys`` ``{key, bidder, public_key_hex, role}``       -> RegisterKey
* ``GET  /api/lots/{lot}`` (deposit terms, outcome, registrations)
* ``POST /api/registrations`` ``{lot, bidder, priority_rank, sme}`` -> RegisterBidder
* ``GET  /api/deposits?lot=LOT``, ``GET /api/deposit-steps?since=N``
* ``POST /api/deposits`` ``{lot, bidder, amount_fen}`` (paid)       -> ConfirmDeposit
* ``POST /api/payments`` ``{lot}`` / ``POST /api/defaults`` ``{lot, reason}``
* ``GET  /api/blacklist``, ``POST /api/blacklist`` ``{bidder, reason}``,
  ``POST /api/blacklist/remove`` ``{bidder, reason}``
* ``GET/POST /api/experts``, ``GET /api/experts/{id}``, ``POST /api/relations``
* ``POST /api/draws`` (DrawCriteria) -> committed (CommitExpertDraw);
  ``POST /api/draws/{id}/reveal`` (409 until the commitment is in the ledger)
  -> RevealExpertDraw; ``GET /api/draws/{id}``; ``GET /api/draws/{id}/rerun``
  (from the seed the ledger holds, checked against the ledgered hashes)
* ``GET  /api/intents?since=N`` (the outbox), ``GET /metrics``, ``GET /healthz``

A write answers 200 (accepted, with its ledger seq), 409 (refused by the
engine, with the code), or 202 (stored and still pending: it will be sent,
exactly once, even across restarts).  Expert draws are writes too (503
read-only).  Refunds are not an endpoint: the projection derives them and the
service queues one RefundDeposit per refund due (:meth:`Registry.queue_refunds`,
every 0.2 s while it writes).  Prints ``listening http=URL`` once caught up
and bound.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from config.settings import LimitSettings
from gateway.wire import protocol as p
from gateway.wire.access import (
    METRICS_READERS,
    PUBLIC,
    REGISTRY_READERS,
    REGISTRY_WRITERS,
    STAFF,
    Access,
    BodyTooLarge,
    Rule,
    TokenBook,
    caller_of,
    read_body,
)
from gateway.wire.params import (
    ParamError,
    bad_request,
    guard,
    id_matcher,
    path_id,
    query_id,
    query_int,
)
from ledger.store import LedgerStore
from persistence.service import ServiceStore
from services.follower import Follower, FollowerMetrics
from services.lifecycle import on_signals, open_stores
from services.registry.experts import DrawError, ExpertBook, public, rerun, rerun_ledgered
from services.registry.model import Draw, DrawCriteria, Expert, Relation, RelationKind
from services.registry.projection import DEFAULT_ORIGIN, RegistryProjection, RegistryReader
from services.registry.writer import Outbox, Result, Submitter, frame_dict

NAME = "registry"
MAX_PAGE = 1000
WRITE_WAIT_S = 10.0


class DrawNotLedgered(DrawError):
    """A reveal before the draw's commitment is accepted in the ledger."""


class Registry:
    """The registry's parts over one store (the service, the CLI and tests)."""

    def __init__(
        self,
        store: ServiceStore,
        ledger: LedgerStore | None,
        *,
        origin: str = DEFAULT_ORIGIN,
        metrics_registry: CollectorRegistry | None = None,
        limits: LimitSettings | None = None,
    ) -> None:
        self.store = store
        self.origin = origin
        # how request bodies are bounded (the engine's own [limits]; the defaults
        # until the companions read the platform's config)
        self.limits = limits or LimitSettings()
        self.projection = RegistryProjection(origin)
        self.metrics = metrics_registry or CollectorRegistry()
        self.follower: Follower | None = None
        if ledger is not None:
            self.follower = Follower(
                NAME,
                ledger,
                store,
                [self.projection],
                metrics=FollowerMetrics(self.metrics, NAME),
            )
        self.reader = RegistryReader(store)
        self.experts = ExpertBook(store)
        self.outbox = Outbox(store, self.reader)
        self.submitter: Submitter | None = None
        self.steps = Counter(
            "pubex_registry_deposit_steps",
            "Deposit state changes applied by this process, by state",
            ["state"],
            registry=self.metrics,
        )
        self.pending = Gauge(
            "pubex_registry_intents_pending",
            "Registry writes stored and not yet in the ledger",
            registry=self.metrics,
        )

    def connect(self, ws_url: str, token: str) -> Submitter:
        self.submitter = Submitter(self.outbox, ws_url, token, identity=self.origin)
        return self.submitter

    def _writer(self) -> Submitter:
        if self.submitter is None:
            raise PermissionError("read-only: start the registry with --ws URL --token T")
        return self.submitter

    async def write(self, frames: list[tuple[p.StaffFrame, str]], actor: str = "") -> list[Any]:
        """Queue ``frames`` (made for staff member ``actor``: ledgered with each)
        and wait for their outcomes."""
        sub = self._writer()
        if actor:
            frames = [(msgspec.structs.replace(f, actor=actor), why) for f, why in frames]
        seqs = self.outbox.add([(frame_dict(f), purpose) for f, purpose in frames])
        sub.wake()
        return [await sub.wait(cs, WRITE_WAIT_S) for cs in seqs]

    def queue_refunds(self) -> list[int]:
        """One RefundDeposit intent per refund the projection holds due (once)."""
        sub = self._writer()
        seqs = self.outbox.queue_refunds()
        if seqs:
            sub.wake()
        return seqs

    async def commit_draw(
        self, criteria: DrawCriteria, wait_s: float = WRITE_WAIT_S, actor: str = ""
    ) -> tuple[Draw, Result]:
        """Filter the pool and commit the seed, CommitExpertDraw queued with it."""
        sub = self._writer()
        bidders = self.reader.lot_bidders(criteria.lot_id)
        d = self.experts.commit(criteria, bidders, self.outbox, actor)
        sub.wake()
        return d, await sub.wait(d.commit_cs, wait_s)

    async def reveal_draw(
        self, draw_id: str, now_ns: int, wait_s: float = WRITE_WAIT_S, actor: str = ""
    ) -> tuple[Draw, Result | None]:
        """Draw (only once the commitment is accepted in the ledger) and queue
        RevealExpertDraw with the result; a second reveal is a read."""
        sub = self._writer()
        d = self.experts.draw(draw_id)
        if d is None:
            raise DrawError(f"unknown draw {draw_id}")
        if d.state == "committed" and d.commit_cs:
            r = sub.result(d.commit_cs)
            if r.state != "accepted":
                raise DrawNotLedgered(
                    f"the commitment of {draw_id} is not in the ledger: {r.state} {r.name}".strip()
                )
        d = self.experts.reveal(draw_id, now_ns, self.outbox if d.commit_cs else None, actor)
        if not d.reveal_cs:
            return d, None  # a draw made before draws were ledgered
        sub.wake()
        return d, await sub.wait(d.reveal_cs, wait_s)


def _json(data: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(data), status, media_type="application/json")


class _Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


# Request bodies: read by the same ``protocol.Reader`` as WebSocket frames (depth,
# duplicate keys, 63-bit integers, ids matching [limits] id_pattern, money at
# most max_amount_fen), then turned into the registry's own records.
Day = Annotated[str, msgspec.Meta(pattern="^[0-9]{4}-[0-9]{2}-[0-9]{2}$", max_length=10)]
Count = Annotated[int, msgspec.Meta(ge=0, le=1_000)]


@p.register_body
class KeyBody(_Body):
    key: p.Id
    bidder: p.Id
    public_key_hex: p.Hex32
    role: Literal["bidder", "supplier", "purchaser", "committee"] = "bidder"


@p.register_body
class RegistrationBody(_Body):
    lot: p.Id
    bidder: p.Id
    priority_rank: p.Rank = 0
    sme: bool = False


@p.register_body
class DepositBody(_Body):
    lot: p.Id
    bidder: p.Id
    amount_fen: p.Fen


@p.register_body
class LotBody(_Body):
    lot: p.Id
    reason: p.Reason = ""


@p.register_body
class BlacklistBody(_Body):
    bidder: p.Id
    reason: p.Reason


@p.register_body
class ExpertBody(_Body):
    expert_id: p.Id
    name: p.Title
    specialties: Annotated[list[p.Id], msgspec.Meta(max_length=32)]
    region: p.Id
    available: bool = True
    engaged_days: Annotated[list[Day], msgspec.Meta(max_length=366)] = []
    barred: bool = False


@p.register_body
class RelationBody(_Body):
    expert_id: p.Id
    subject_id: p.Id
    kind: RelationKind
    until_ns: Annotated[int, msgspec.Meta(ge=-1, le=p.INT63_MAX)] = -1
    note: p.Reason = ""


@p.register_body
class DrawBody(_Body):
    lot_id: p.Id
    specialty: p.Id  # "" = any
    region: p.Id = ""  # "" = nationwide
    region_reason: p.Reason = ""
    count: Count = 5
    alternates: Count = 2
    day: Annotated[str, msgspec.Meta(max_length=10)] = ""
    avoid_subjects: Annotated[list[p.Id], msgspec.Meta(max_length=1_000)] = []
    at_ns: p.Ns = 0
    operator: p.Title = ""
    supervisor: p.Title = ""


def _listed(got: Any) -> list[Any]:
    return got if isinstance(got, list) else [got]


def build_app(reg: Registry, access: Access | None = None) -> Starlette:
    """``access``: the platform's tokens and Origins (default: none -- every
    route but /healthz and loopback /metrics refused)."""
    access = access or Access(TokenBook())
    access.count_into(reg.metrics)
    reader, book = reg.reader, reg.experts

    bodies = p.Reader.from_limits(reg.limits)
    ids = id_matcher(reg.limits.id_pattern)

    async def body(request: Request, kind: Any) -> Any:
        try:
            data = await read_body(request, reg.limits.max_frame_bytes)
        except BodyTooLarge as e:  # refused as the Reader would, without buffering it
            raise p.FrameError(p.GatewayError.frame_too_large, str(e)) from None
        return bodies.body(data, kind)

    async def write(frames: list[tuple[p.StaffFrame, str]], request: Request) -> Response:
        try:
            results = await reg.write(frames, actor_of(request))
        except PermissionError as e:
            return _json({"error": str(e)}, 503)
        states = {r.state for r in results}
        status = 200 if states == {"accepted"} else 202 if "pending" in states else 409
        return _json({"results": results}, status)

    def handler(fn: Any) -> Any:
        @functools.wraps(fn)
        @guard  # a malformed query or path parameter -> 400; the unexpected -> typed 500
        async def wrapped(request: Request) -> Response:
            try:
                out: Response = await fn(request)
                return out
            except ParamError as e:
                return bad_request(e)
            except p.FrameError as e:
                return _json({"error": e.message, "code": e.code.name}, 400)
            except (ValueError, msgspec.ValidationError, msgspec.DecodeError, DrawError) as e:
                return _json({"error": str(e)}, 400)

        return wrapped

    async def subjects(request: Request) -> Response:
        limit = query_int(request, "limit", 500, cap=MAX_PAGE, lo=1)
        rows = reader.subjects(query_id(request, "after", pattern=ids, empty="") or "", limit)
        return _json({"subjects": rows, "next": rows[-1].subject_id if rows else ""})

    async def subject(request: Request) -> Response:
        found = reader.subject(path_id(request, "sid", pattern=ids))
        if found is None:
            return _json({"error": "unknown subject"}, 404)
        return _json({"subject": found[0], "keys": found[1]})

    async def keys(request: Request) -> Response:
        b = await body(request, KeyBody)
        frame = p.RegisterKeyFrame(0, b.key, b.bidder, b.public_key_hex, b.role)
        return await write([(frame, f"key {b.key}")], request)

    async def lot(request: Request) -> Response:
        lot_id = path_id(request, "lot", pattern=ids)
        info = reader.lot(lot_id)
        if info is None:
            return _json({"error": "unknown lot"}, 404)
        return _json({"lot": info, "registrations": reader.registrations(lot_id)})

    async def registrations(request: Request) -> Response:
        b = await body(request, RegistrationBody)
        frame = p.RegisterBidderFrame(0, b.lot, b.bidder, b.priority_rank, b.sme)
        return await write([(frame, f"register {b.lot}/{b.bidder}")], request)

    async def deposits(request: Request) -> Response:
        if request.method == "POST":
            b = await body(request, DepositBody)
            frame = p.ConfirmDepositFrame(0, b.lot, b.bidder, b.amount_fen)
            return await write([(frame, f"deposit {b.lot}/{b.bidder}")], request)
        lot_id = query_id(request, "lot", pattern=ids)
        if lot_id is None:
            raise ParamError("lot", "lot is required")
        return _json({"deposits": reader.registrations(lot_id)})

    async def steps(request: Request) -> Response:
        since = query_int(request, "since", 0)
        rows = reader.steps(since, query_int(request, "limit", 500, cap=MAX_PAGE, lo=1))
        return _json({"steps": rows, "next": rows[-1].step_no if rows else since})

    async def payments(request: Request) -> Response:
        b = await body(request, LotBody)
        return await write([(p.ConfirmPaymentFrame(0, b.lot), f"paid {b.lot}")], request)

    async def defaults(request: Request) -> Response:
        b = await body(request, LotBody)
        frame = p.DeclareDefaultFrame(0, b.lot, b.reason or "default")
        return await write([(frame, f"default {b.lot}")], request)

    async def blacklist(request: Request) -> Response:
        if request.method == "POST":
            b = await body(request, BlacklistBody)
            frame = p.BlacklistFrame(0, b.bidder, b.reason)
            return await write([(frame, f"blacklist {b.bidder}")], request)
        return _json({"blacklist": reader.blacklist()})

    async def unblacklist(request: Request) -> Response:
        b = await body(request, BlacklistBody)
        frame = p.UnblacklistFrame(0, b.bidder, b.reason)
        return await write([(frame, f"unblacklist {b.bidder}")], request)

    async def experts(request: Request) -> Response:
        if request.method == "POST":
            got = await body(request, list[ExpertBody] | ExpertBody)
            rows = [Expert(**msgspec.structs.asdict(b)) for b in _listed(got)]
            book.put_experts(rows)
            return _json({"stored": len(rows)})
        return _json({"experts": book.experts()})

    async def expert(request: Request) -> Response:
        eid = path_id(request, "eid", pattern=ids)
        e = book.expert(eid)
        if e is None:
            return _json({"error": "unknown expert"}, 404)
        return _json({"expert": e, "relations": book.relations(eid)})

    async def relations(request: Request) -> Response:
        got = await body(request, list[RelationBody] | RelationBody)
        rows = [Relation(**msgspec.structs.asdict(b)) for b in _listed(got)]
        book.add_relations(rows)
        return _json({"stored": len(rows)})

    def outcome(d: Draw, r: Result | None) -> Response:
        status = 200 if r is None or r.state == "accepted" else 202 if r.state == "pending" else 409
        return _json({"draw": public(d), "result": r}, status)

    async def draws(request: Request) -> Response:
        if request.method == "POST":
            c = DrawCriteria(**msgspec.structs.asdict(await body(request, DrawBody)))
            if not c.at_ns:
                c = msgspec.structs.replace(c, at_ns=time.time_ns())
            try:
                return outcome(*await reg.commit_draw(c, actor=actor_of(request)))
            except PermissionError as e:
                return _json({"error": str(e)}, 503)
        return _json({"draws": [public(d) for d in book.draws()]})

    async def draw(request: Request) -> Response:
        d = book.draw(path_id(request, "did", pattern=ids))
        if d is None:
            return _json({"error": "unknown draw"}, 404)
        return _json({"draw": public(d)})

    async def reveal(request: Request) -> Response:
        did = path_id(request, "did", pattern=ids)  # malformed: 400 even read-only
        if book.draw(did) is None:
            return _json({"error": "unknown draw"}, 404)
        try:
            return outcome(*await reg.reveal_draw(did, time.time_ns(), actor=actor_of(request)))
        except PermissionError as e:
            return _json({"error": str(e)}, 503)
        except DrawNotLedgered as e:
            return _json({"error": str(e)}, 409)

    async def rerun_draw(request: Request) -> Response:
        d = book.draw(path_id(request, "did", pattern=ids))
        if d is None:
            return _json({"error": "unknown draw"}, 404)
        ledgered = reader.ledger_draw(d.draw_id)
        again = rerun_ledgered(d, ledgered) if ledgered is not None else rerun(d)
        return _json({"drawn": again, "matches": again == d.drawn, "ledgered": ledgered})

    async def intents(request: Request) -> Response:
        since = query_int(request, "since", 0)
        rows = reg.outbox.intents(since, query_int(request, "limit", 500, cap=MAX_PAGE))
        return _json({"intents": rows})

    async def metrics(request: Request) -> Response:
        if reg.follower is not None:
            reg.follower.refresh_tail()
        reg.pending.set(len(reg.outbox.pending()))
        return Response(generate_latest(reg.metrics), media_type="text/plain; version=0.0.4")

    async def healthz(request: Request) -> Response:
        stats = msgspec.structs.asdict(reg.follower.statistics()) if reg.follower else {}
        sub = reg.submitter
        writer = {
            "writes": sub is not None,
            "connected": bool(sub and sub.connected),
            "last_error": sub.last_error if sub else "",
        }
        return _json({"ok": True, **stats, **writer})

    # Who may do what (RULES.md §8: identities, deposits and experts stay
    # confidential): staff, supervisors (reads) and the registry service.
    get = {"GET": REGISTRY_READERS}
    post = {"POST": REGISTRY_WRITERS}
    both = {**get, **post}
    routes = [
        ("/api/subjects", subjects, get),
        ("/api/subjects/{sid}", subject, get),
        ("/api/keys", keys, post),
        ("/api/lots/{lot}", lot, get),
        ("/api/registrations", registrations, post),
        ("/api/deposits", deposits, both),
        ("/api/deposit-steps", steps, get),
        ("/api/payments", payments, post),
        ("/api/defaults", defaults, post),
        ("/api/blacklist", blacklist, both),
        ("/api/blacklist/remove", unblacklist, post),
        ("/api/experts", experts, both),
        ("/api/experts/{eid}", expert, get),
        ("/api/relations", relations, post),
        ("/api/draws", draws, both),
        ("/api/draws/{did}", draw, get),
        ("/api/draws/{did}/reveal", reveal, post),
        ("/api/draws/{did}/rerun", rerun_draw, get),
        ("/api/intents", intents, get),
        ("/metrics", metrics, {"GET": METRICS_READERS}),
        ("/healthz", healthz, {"GET": PUBLIC}),
    ]
    return Starlette(routes=access.routes(Rule(path, handler(fn), m) for path, fn, m in routes))


def actor_of(request: Request) -> str:
    """The staff member a write is made for ("" for the service's own)."""
    who = caller_of(request)
    return who.identity if who.role == STAFF else ""


async def _count_steps(reg: Registry) -> None:
    while True:
        for s in reg.projection.take_steps():
            reg.steps.labels(s.state).inc()
        if reg.submitter is not None:
            reg.queue_refunds()  # the follower caught up before: rg_due is current
            reg.submitter.changed()
        await trio.sleep(0.2)


async def serve_registry(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    http_port: int = 0,
    ws_url: str = "",
    token: str = "",
    origin: str = DEFAULT_ORIGIN,
    access: Access | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    from gateway.wire.http import serve_http

    ledger, store = await open_stores(data_dir, NAME)
    try:
        reg = Registry(store, ledger, origin=origin)
        assert reg.follower is not None
        app = build_app(reg, access)
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            # caught up first: the writer then knows which intents the ledger holds
            await nursery.start(reg.follower.run)
            if ws_url:
                await nursery.start(reg.connect(ws_url, token).run)
            port = await nursery.start(serve_http, app, host, http_port, shutdown)
            nursery.start_soon(_count_steps, reg)
            await nursery.start(on_signals, shutdown, nursery.cancel_scope)
            url = f"http://{host}:{port}/"
            task_status.started(url)
            print(f"listening http={url}", flush=True)
    finally:
        store.close()
        ledger.close()
