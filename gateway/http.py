"""The HTTP side (hypercorn + Starlette, in the same trio.run): the console
page and its static files, /metrics, /healthz, /time and the lots API.

Everything here reads the durable views (``gateway.views``): bidder codes only,
and whether a reserve exists, never its amount before the close.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import msgspec
import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.params import guard, id_matcher, path_id
from gateway.server import Gateway

CONSOLE_DIR = Path(__file__).parent / "console"
_TOKEN = re.compile(r"[!#-+\--:<-~]{1,256}")  # printable ASCII but space, '"', ',' and ';'
VENDOR_DIR = CONSOLE_DIR / "vendor"  # installed from npm by the Makefile, never committed


def build_app(gw: Gateway, ws_url: str, supervision_url: str = "") -> Starlette:
    """``supervision_url``: the supervision service (``pubex supervise``) whose
    alert feed the console shows to staff and supervisors ("" = none)."""

    def json(data: Any, status: int = 200) -> Response:
        return Response(msgspec.json.encode(data), status, media_type="application/json")

    ids = id_matcher(gw.limits.id_pattern)  # a path id that cannot exist is a 400

    def public_lot(request: Request) -> Any:
        """The lot named in the path, None when unknown -- or still a draft: drafts
        are for staff and supervisors (the WebSocket), never the public API."""
        view = gw.views.lots.get(path_id(request, "lot", pattern=ids))
        return view if view is not None and view.published else None

    @guard
    async def index(request: Request) -> Response:
        return FileResponse(CONSOLE_DIR / "index.html")

    @guard
    async def config(request: Request) -> Response:
        return json(
            {
                "ws_url": ws_url,
                "server_time_ns": time.time_ns(),
                "supervision_url": supervision_url,
            }
        )

    async def login(request: Request) -> Response:
        """Staff open /login?token=...; the console then authenticates by cookie."""
        token = request.query_params.get("token", "")
        if not _TOKEN.fullmatch(token):  # a header value: printable ASCII only (was HTTP 500)
            return JSONResponse({"error": "token must be 1-256 printable ASCII characters"}, 400)
        response = RedirectResponse("/", 303)
        response.set_cookie("pubex_token", token, httponly=True, samesite="strict")
        return response

    async def metrics(request: Request) -> Response:
        return Response(gw.metrics.render(), media_type="text/plain; version=0.0.4")

    @guard
    async def healthz(request: Request) -> Response:
        return json({"ok": True, "durable_seq": gw.rt.durable_seq, "queue": gw.rt.queue_depth})

    @guard
    async def server_time(request: Request) -> Response:
        return json({"server_time_ns": time.time_ns()})

    @guard
    async def lots(request: Request) -> Response:
        return json([v.snapshot() for v in gw.views.lots.values() if v.published])

    @guard
    async def lot(request: Request) -> Response:
        view = public_lot(request)
        if view is None:
            return JSONResponse({"error": "unknown lot"}, 404)
        return json(view.snapshot())

    @guard
    async def bids(request: Request) -> Response:
        view = public_lot(request)
        if view is None:
            return JSONResponse({"error": "unknown lot"}, 404)
        rows = [
            {
                "seq": b.seq,
                "ts_ns": b.ts_ns,
                "bidder_code": b.bidder_code,
                "amount_fen": b.amount_fen,
                "bid_no": b.bid_no,
            }
            for b in view.bids
        ]
        return json(rows)

    @guard
    async def items(request: Request) -> Response:
        return json([v.snapshot() for v in gw.views.items.items.values()])

    @guard
    async def item(request: Request) -> Response:
        view = gw.views.items.items.get(path_id(request, "item", pattern=ids))
        if view is None:
            return JSONResponse({"error": "unknown item"}, 404)
        return json(view.snapshot())

    @guard
    async def trades(request: Request) -> Response:
        view = gw.views.items.items.get(path_id(request, "item", pattern=ids))
        if view is None:
            return JSONResponse({"error": "unknown item"}, 404)
        return json(list(view.history))

    routes = [
        Route("/", index),
        Route("/config.json", config),
        Route("/login", login),
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/time", server_time),
        Route("/api/lots", lots),
        Route("/api/lots/{lot}", lot),
        Route("/api/lots/{lot}/bids", bids),
        Route("/api/items", items),
        Route("/api/items/{item}", item),
        Route("/api/items/{item}/trades", trades),
        Mount("/static", StaticFiles(directory=CONSOLE_DIR, check_dir=False), name="static"),
    ]
    return Starlette(routes=routes)


async def serve_http(
    app: Starlette,
    host: str,
    port: int,
    shutdown: trio.Event,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 2

    async def started_port(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await hypercorn_serve(
            app,
            config,
            shutdown_trigger=shutdown.wait,  # type: ignore[arg-type]
            task_status=task_status,
        )

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(started_port)
        task_status.started(int(str(binds[0]).rsplit(":", 1)[1]))
