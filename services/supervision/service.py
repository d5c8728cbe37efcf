"""``pubex supervise``: the supervision service as its own process.

Follows ``DATA/ledger`` read-only with the shared follower, keeps its
projection in ``DATA/supervision`` (its own LMDB store) and serves, on its own
HTTP port (hypercorn + Starlette in the same trio.run):

* ``GET /api/alerts?since=ID&limit=N[&lot=LOT]`` -- the alert feed, oldest
  first, ids > ``since``; ``next`` is the ``since`` of the following page;
* ``GET /api/alerts/{id}`` -- one alert with its handling records;
* ``GET /api/lots?after=LOT&limit=N`` and ``GET /api/lots/{lot}`` -- live
  monitoring (price, bid count, bidders, end time, alerts);
* ``GET /api/complaints?since=SEQ&limit=N[&lot=LOT]`` and
  ``GET /api/complaints/{id}`` -- complaints (质疑 / 投诉) for supervisors: the
  text, the answer deadline, every handling step, the answer, ``overdue``;
* ``WS /ws/alerts?since=ID[&lot=LOT]`` -- the live alert feed: every alert with
  id > ``since`` (with its handling so far) as ``{"type": "alert", ...}``, then
  new alerts as the follower raises them and handling decisions as they are
  ledgered (``{"type": "handling", ...}``).  A client resumes with the last
  alert id it saw;
* ``GET /metrics`` -- follower position and lag, alerts raised by rule/level;
* ``GET /healthz`` -- position, ledger tail and lag.

Every route but /healthz needs a staff or supervisor token (``Authorization:
Bearer``, or the console's ``pubex_token`` cookie -- cookies are per host, not
per port, so the console's login reaches this port too), and the WebSocket an
allowed ``Origin`` when a browser sends one; /metrics is for loopback clients
or the metrics token (``gateway.wire.access``).

Prints ``listening http=URL`` once the first catch-up is done and the port is
bound.  SIGTERM / SIGINT stop it; SIGKILL is safe too (the follower's position
and the projection commit together).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import trio
from prometheus_client import CollectorRegistry, Counter, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.wire.access import METRICS_READERS, OFFICIALS, PUBLIC, Access, Rule, TokenBook
from gateway.wire.params import ParamError, guard, path_id, path_int, query_id, query_int
from services.follower import Follower, FollowerMetrics
from services.lifecycle import on_signals, open_stores
from services.supervision.model import SupervisionConfig
from services.supervision.projection import SupervisionProjection, SupervisionReader

NAME = "supervision"
MAX_PAGE = 1000
FEED_PAGE = 200
FEED_IDLE_S = 1.0  # a feed re-reads the store at least this often
PUMP_S = 0.05


class Feed:
    """Wakes the WebSocket feeds when the follower committed alerts or handling."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self, timeout_s: float) -> None:
        with trio.move_on_after(timeout_s):
            await self._event.wait()


class SuperviseError(Exception):
    pass


def build_app(
    reader: SupervisionReader,
    follower: Follower,
    registry: CollectorRegistry,
    feed: Feed | None = None,
    access: Access | None = None,
) -> Starlette:
    """Staff and supervisors only (complaints name their filers, alerts their
    subjects), the WebSocket too, from an allowed Origin; /healthz is public."""
    feed = feed or Feed()
    access = access or Access(TokenBook())
    access.count_into(registry)

    def json(data: Any, status: int = 200) -> Response:
        return Response(msgspec.json.encode(data), status, media_type="application/json")

    @guard
    async def alerts(request: Request) -> Response:
        since = query_int(request, "since", 0)
        limit = query_int(request, "limit", 100, cap=MAX_PAGE, lo=1)
        lot = query_id(request, "lot")
        rows = reader.alerts(since, limit, lot)
        nxt = rows[-1].alert_id if rows else since
        return json({"alerts": rows, "next": nxt, "position": follower.position.seq})

    @guard
    async def alert(request: Request) -> Response:
        found = reader.alert(path_int(request, "alert_id"))
        if found is None:
            return json({"error": "unknown alert"}, 404)
        a, handling = found
        return json({"alert": a, "handling": handling})

    @guard
    async def lots(request: Request) -> Response:
        limit = query_int(request, "limit", 500, cap=MAX_PAGE, lo=1)
        rows = reader.monitors(query_id(request, "after", empty="") or "", limit)
        return json({"lots": rows, "next": rows[-1].lot_id if rows else ""})

    @guard
    async def lot(request: Request) -> Response:
        m = reader.monitor(path_id(request, "lot"))
        if m is None:
            return json({"error": "unknown lot"}, 404)
        return json(m)

    def complaint_row(c: Any, now_ns: int) -> dict[str, Any]:
        row: dict[str, Any] = msgspec.to_builtins(c)
        done = c.answered_ns or now_ns
        row["overdue"] = bool(c.deadline_ns) and done >= c.deadline_ns
        return row

    @guard
    async def complaints(request: Request) -> Response:
        since = query_int(request, "since", 0)
        limit = query_int(request, "limit", 100, cap=MAX_PAGE, lo=1)
        rows = reader.complaints(since, limit, query_id(request, "lot"))
        now = time.time_ns()
        nxt = rows[-1].filed_seq if rows else since
        return json({"complaints": [complaint_row(c, now) for c in rows], "next": nxt})

    @guard
    async def complaint(request: Request) -> Response:
        c = reader.complaint(path_id(request, "complaint_id"))
        if c is None:
            return json({"error": "unknown complaint"}, 404)
        return json(complaint_row(c, time.time_ns()))

    async def ws_alerts(ws: WebSocket) -> None:
        try:
            since = query_int(ws, "since", 0)
            lot = query_id(ws, "lot")
        except ParamError as e:
            await ws.close(1008, e.message)  # before accept: HTTP 403
            return
        await ws.accept()

        async def send(data: Any) -> None:
            await ws.send_text(msgspec.json.encode(data).decode())

        async def push() -> None:
            nonlocal since
            hseq = reader.last_handled_seq()  # before the backlog: nothing falls between
            await send({"type": "hello", "since": since, "position": follower.position.seq})
            while True:
                rows = reader.alerts(since, FEED_PAGE, lot)
                for a in rows:
                    found = reader.alert(a.alert_id)
                    handling = found[1] if found else []
                    await send({"type": "alert", "alert": a, "handling": handling})
                    since = a.alert_id
                handled = reader.handled_since(hseq, FEED_PAGE)
                for alert_id, h in handled:
                    hseq = h.seq
                    if alert_id <= since:  # newer alerts carry their handling
                        await send({"type": "handling", "alert_id": alert_id, "handling": h})
                if not rows and not handled:
                    await feed.wait(FEED_IDLE_S)

        async def until_closed(scope: trio.CancelScope) -> None:
            while (await ws.receive())["type"] != "websocket.disconnect":
                pass
            scope.cancel()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(until_closed, nursery.cancel_scope)
                await push()
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the client went away mid-send

    @guard
    async def metrics(request: Request) -> Response:
        follower.refresh_tail()
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    @guard
    async def healthz(request: Request) -> Response:
        return json({"ok": True, **msgspec.structs.asdict(follower.statistics())})

    get = {"GET": OFFICIALS}
    rules = [
        Rule("/api/alerts", alerts, get),
        Rule("/api/alerts/{alert_id}", alert, get),
        Rule("/api/lots", lots, get),
        Rule("/api/lots/{lot}", lot, get),
        Rule("/api/complaints", complaints, get),
        Rule("/api/complaints/{complaint_id}", complaint, get),
        Rule("/ws/alerts", ws_alerts, get, websocket=True),
        Rule("/metrics", metrics, {"GET": METRICS_READERS}),
        Rule("/healthz", healthz, {"GET": PUBLIC}),
    ]
    return Starlette(routes=access.routes(rules))


async def supervise(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    http_port: int = 0,
    config: SupervisionConfig | None = None,
    access: Access | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    from gateway.wire.http import serve_http

    ledger, store = await open_stores(data_dir, NAME)
    try:
        registry = CollectorRegistry()
        raised = Counter(
            "pubex_supervision_alerts",
            "Alerts raised by this process, by rule and level",
            ["rule", "level"],
            registry=registry,
        )
        projection = SupervisionProjection(config)
        follower = Follower(
            NAME, ledger, store, [projection], metrics=FollowerMetrics(registry, NAME)
        )
        reader = SupervisionReader(store)
        feed = Feed()
        app = build_app(reader, follower, registry, feed, access)
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(follower.run)
            port = await nursery.start(serve_http, app, host, http_port, shutdown)
            nursery.start_soon(_pump, projection, raised, feed)
            await nursery.start(on_signals, shutdown, nursery.cancel_scope)
            url = f"http://{host}:{port}/"
            task_status.started(url)
            print(f"listening http={url}", flush=True)
    finally:
        store.close()
        ledger.close()


async def _pump(projection: SupervisionProjection, raised: Counter, feed: Feed) -> None:
    """Count what the follower raised and wake the feeds.  The follower applies
    and commits a chunk in one synchronous step, so whatever is taken here is
    already readable from the store."""
    handled = projection.handled
    while True:
        new = projection.take_raised()
        for a in new:
            raised.labels(a.rule, a.level).inc()
        if new or projection.handled != handled:
            handled = projection.handled
            feed.notify()
        await trio.sleep(PUMP_S)
