"""``pubex disclose``: the disclosure service as its own process.

Follows ``DATA/ledger`` read-only with the shared follower, keeps its notices
in ``DATA/disclosure`` (its own LMDB store), publishes the ledger's signed
checkpoints as they appear, and serves on its own HTTP port (hypercorn +
Starlette in the same trio.run):

* ``GET /`` -- the public page: announced lots and the latest notices (HTML);
* ``GET /lots/{lot}`` -- one lot's terms and notices (HTML);
* ``GET /api/notices?since=ID&limit=N[&lot=LOT]`` -- the notice feed, oldest
  first, ids > ``since``; ``next`` is the ``since`` of the following page;
* ``GET /api/lots`` and ``GET /api/lots/{lot}`` -- the public lot records;
* ``GET /checkpoints.json?since=SEQ&limit=N`` -- the published checkpoints
  (what ``pubex ledger verify DIR --against URL`` reads);
* ``GET /metrics`` and ``GET /healthz``.

Prints ``listening http=URL`` once caught up and bound.  SIGKILL is safe: the
follower's position and the notices commit together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import trio
from prometheus_client import CollectorRegistry, Counter, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from gateway.wire.access import METRICS_READERS, PUBLIC, Access, Rule, TokenBook
from gateway.wire.params import guard, path_id, query_id, query_int
from services.disclosure.checkpoints import CheckpointPublisher
from services.disclosure.pages import index_page, lot_page
from services.disclosure.projection import (
    DisclosureConfig,
    DisclosureProjection,
    DisclosureReader,
)
from services.follower import Follower, FollowerMetrics
from services.lifecycle import on_signals, open_stores

NAME = "disclosure"
MAX_PAGE = 1000
PUBLISH_EVERY_S = 0.2


def checkpoint_page(publisher: CheckpointPublisher, since: int, limit: int) -> dict[str, Any]:
    """One page of the checkpoint feed (the format ledger.published parses)."""
    from ledger.checkpoint import verify_checkpoint

    items = []
    for seq, blob in publisher.page(since, limit):
        cp = verify_checkpoint(publisher.key, blob)
        items.append(
            {"seq": seq, "entry_hash": cp.entry_hash.hex(), "ts_ns": cp.ts_ns, "blob": blob.hex()}
        )
    return {
        "server_pub": publisher.server_pub.hex(),
        "checkpoints": items,
        "next": items[-1]["seq"] if items else since,
    }


def build_app(
    reader: DisclosureReader,
    follower: Follower,
    publisher: CheckpointPublisher | None,
    registry: CollectorRegistry,
    access: Access | None = None,
) -> Starlette:
    """Public (RULES.md §8 makes it so) but /metrics (loopback or its token)."""
    access = access or Access(TokenBook())
    access.count_into(registry)

    def json(data: Any, status: int = 200) -> Response:
        return Response(msgspec.json.encode(data), status, media_type="application/json")

    @guard
    async def index(request: Request) -> Response:
        return HTMLResponse(index_page(reader.latest(50), reader.lots()))

    @guard
    async def lot_html(request: Request) -> Response:
        lot_id = path_id(request, "lot")
        lot = reader.lot(lot_id)
        if lot is None:
            return HTMLResponse("<!doctype html><title>404</title>unknown lot", 404)
        return HTMLResponse(lot_page(lot, reader.notices(0, MAX_PAGE, lot_id)))

    @guard
    async def notices(request: Request) -> Response:
        since = query_int(request, "since", 0)
        limit = query_int(request, "limit", 100, cap=MAX_PAGE)
        found = reader.notices(since, limit, query_id(request, "lot"))
        return json({"notices": found, "next": found[-1].id if found else since})

    @guard
    async def lots(request: Request) -> Response:
        return json(reader.lots())

    @guard
    async def lot(request: Request) -> Response:
        found = reader.lot(path_id(request, "lot"))
        return json(found) if found is not None else json({"error": "unknown lot"}, 404)

    @guard
    async def checkpoints(request: Request) -> Response:
        if publisher is None:
            return json({"error": "the ledger has no server key"}, 404)
        since = query_int(request, "since", 0)
        limit = query_int(request, "limit", MAX_PAGE, cap=MAX_PAGE)
        return json(checkpoint_page(publisher, since, limit))

    @guard
    async def metrics(request: Request) -> Response:
        follower.refresh_tail()
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    @guard
    async def healthz(request: Request) -> Response:
        return json({"ok": True, **msgspec.structs.asdict(follower.statistics())})

    get = {"GET": PUBLIC}
    rules = [
        Rule("/", index, get),
        Rule("/lots/{lot}", lot_html, get),
        Rule("/api/notices", notices, get),
        Rule("/api/lots", lots, get),
        Rule("/api/lots/{lot}", lot, get),
        Rule("/checkpoints.json", checkpoints, get),
        Rule("/metrics", metrics, {"GET": METRICS_READERS}),
        Rule("/healthz", healthz, get),
    ]
    return Starlette(routes=access.routes(rules))


def server_pub_of(data_dir: Path) -> bytes | None:
    pub = data_dir / "server.pub"
    return bytes.fromhex(pub.read_text().strip()) if pub.exists() else None


async def disclose(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    http_port: int = 0,
    config: DisclosureConfig | None = None,
    access: Access | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    from gateway.wire.http import serve_http

    ledger, store = await open_stores(data_dir, NAME)
    try:
        registry = CollectorRegistry()
        follower = Follower(
            NAME,
            ledger,
            store,
            [DisclosureProjection(config)],
            metrics=FollowerMetrics(registry, NAME),
        )
        pub = server_pub_of(data_dir)
        publisher = CheckpointPublisher(ledger, store, pub) if pub else None
        app = build_app(DisclosureReader(store), follower, publisher, registry, access)
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(follower.run)
            if publisher is not None:
                nursery.start_soon(_publish_checkpoints, follower, publisher, registry)
            port = await nursery.start(serve_http, app, host, http_port, shutdown)
            await nursery.start(on_signals, shutdown, nursery.cancel_scope)
            url = f"http://{host}:{port}/"
            task_status.started(url)
            print(f"listening http={url}", flush=True)
    finally:
        store.close()
        ledger.close()


async def _publish_checkpoints(
    follower: Follower, publisher: CheckpointPublisher, registry: CollectorRegistry
) -> None:
    published = Counter(
        "pubex_disclosure_checkpoints", "Signed checkpoints published", registry=registry
    )
    refused = Counter(
        "pubex_disclosure_checkpoints_refused",
        "Ledger checkpoints that did not verify (never published)",
        registry=registry,
    )
    while True:
        before = publisher.refused
        published.inc(publisher.publish(follower.position.seq))
        refused.inc(publisher.refused - before)
        await trio.sleep(PUBLISH_EVERY_S)
