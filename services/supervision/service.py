"""``pubex supervise``: the supervision service as its own process.

Follows ``DATA/ledger`` read-only with the shared follower, keeps its
projection in ``DATA/supervision`` (its own LMDB store) and serves, on its own
HTTP port (hypercorn + Starlette in the same trio.run):

* ``GET /api/alerts?since=ID&limit=N[&lot=LOT]`` -- the alert feed, oldest
  first, ids > ``since``; ``next`` is the ``since`` of the following page;
* ``GET /api/alerts/{id}`` -- one alert with its handling records;
* ``GET /api/lots?after=LOT&limit=N`` and ``GET /api/lots/{lot}`` -- live
  monitoring (price, bid count, bidders, end time, alerts);
* ``GET /metrics`` -- follower position and lag, alerts raised by rule/level;
* ``GET /healthz`` -- position, ledger tail and lag.

Prints ``listening http=URL`` once the first catch-up is done and the port is
bound.  SIGTERM / SIGINT stop it; SIGKILL is safe too (the follower's position
and the projection commit together).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import msgspec
import trio
from prometheus_client import CollectorRegistry, Counter, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ledger.store import LedgerStore
from persistence.service import ServiceStore
from services.follower import Follower, FollowerMetrics
from services.supervision.model import SupervisionConfig
from services.supervision.projection import SupervisionProjection, SupervisionReader

NAME = "supervision"
MAX_PAGE = 1000


class SuperviseError(Exception):
    pass


def _int_param(request: Request, name: str, default: int, hi: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    value = int(raw)  # ValueError -> 400 below
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return min(value, hi) if hi is not None else value


def build_app(
    reader: SupervisionReader, follower: Follower, registry: CollectorRegistry
) -> Starlette:
    def json(data: Any, status: int = 200) -> Response:
        return Response(msgspec.json.encode(data), status, media_type="application/json")

    def bad(e: Exception) -> Response:
        return json({"error": str(e)}, 400)

    async def alerts(request: Request) -> Response:
        try:
            since = _int_param(request, "since", 0)
            limit = max(1, _int_param(request, "limit", 100, MAX_PAGE))
        except ValueError as e:
            return bad(e)
        lot = request.query_params.get("lot")
        rows = reader.alerts(since, limit, lot)
        nxt = rows[-1].alert_id if rows else since
        return json({"alerts": rows, "next": nxt, "position": follower.position.seq})

    async def alert(request: Request) -> Response:
        try:
            alert_id = int(request.path_params["alert_id"])
        except ValueError as e:
            return bad(e)
        found = reader.alert(alert_id)
        if found is None:
            return json({"error": "unknown alert"}, 404)
        a, handling = found
        return json({"alert": a, "handling": handling})

    async def lots(request: Request) -> Response:
        try:
            limit = max(1, _int_param(request, "limit", 500, MAX_PAGE))
        except ValueError as e:
            return bad(e)
        rows = reader.monitors(request.query_params.get("after", ""), limit)
        return json({"lots": rows, "next": rows[-1].lot_id if rows else ""})

    async def lot(request: Request) -> Response:
        m = reader.monitor(request.path_params["lot"])
        if m is None:
            return json({"error": "unknown lot"}, 404)
        return json(m)

    async def metrics(request: Request) -> Response:
        follower.refresh_tail()
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    async def healthz(request: Request) -> Response:
        return json({"ok": True, **msgspec.structs.asdict(follower.statistics())})

    return Starlette(
        routes=[
            Route("/api/alerts", alerts),
            Route("/api/alerts/{alert_id}", alert),
            Route("/api/lots", lots),
            Route("/api/lots/{lot}", lot),
            Route("/metrics", metrics),
            Route("/healthz", healthz),
        ]
    )


async def _wait_for_ledger(ledger_dir: Path) -> None:
    """The service may start before the engine has written anything."""
    while not (ledger_dir / "data.mdb").exists():
        await trio.sleep(0.2)


async def supervise(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    http_port: int = 0,
    config: SupervisionConfig | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    from gateway.http import serve_http

    ledger_dir = data_dir / "ledger"
    await _wait_for_ledger(ledger_dir)
    ledger = LedgerStore.open(ledger_dir, readonly=True)
    try:
        store = ServiceStore.open(data_dir / NAME)
    except BaseException:
        ledger.close()
        raise
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
        app = build_app(reader, follower, registry)
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(follower.run)
            port = await nursery.start(serve_http, app, host, http_port, shutdown)
            nursery.start_soon(_count_alerts, projection, raised)
            nursery.start_soon(_on_signals, shutdown, nursery.cancel_scope)
            url = f"http://{host}:{port}/"
            task_status.started(url)
            print(f"listening http={url}", flush=True)
    finally:
        store.close()
        ledger.close()


async def _count_alerts(projection: SupervisionProjection, raised: Counter) -> None:
    while True:
        for a in projection.take_raised():
            raised.labels(a.rule, a.level).inc()
        await trio.sleep(0.5)


async def _on_signals(shutdown: trio.Event, scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            shutdown.set()
            scope.cancel()
            return
