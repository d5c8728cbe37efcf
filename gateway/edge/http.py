"""The HTTP side (hypercorn + Starlette, in the same trio.run): the console
page and its static files, /metrics, /healthz, /time and the lots API.

Everything here reads the durable views (``gateway.public.views``): bidder codes only,
and whether a reserve exists, never its amount before the close.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from gateway.edge.server import Gateway
from gateway.wire.access import (
    AUTH_FAILED,
    COOKIE,
    METRICS_READERS,
    PUBLIC,
    STAFF,
    SUPERVISOR,
    Access,
    BodyTooLarge,
    Rule,
    TokenBook,
    json_response,
    read_body,
)
from gateway.wire.metrics import merge_texts
from gateway.wire.params import guard, id_matcher, path_id

CONSOLE_DIR = Path(__file__).parent.parent / "console"  # the browser console's static files
_TOKEN = re.compile(r"[!#-+\--:<-~]{1,256}")  # printable ASCII but space, '"', ',' and ';'


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


_LOGIN = msgspec.json.Decoder(LoginBody)


def build_app(
    gw: Gateway, ws_url: str, supervision_url: str = "", access: Access | None = None
) -> Starlette:
    """``supervision_url``: the supervision service (``pubex supervise``) whose
    alert feed the console shows to staff and supervisors ("" = none).
    ``access``: who may use which route (default: no tokens, loopback metrics)."""
    access = access or Access(TokenBook())

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
                "server_time_ns": gw.core.clock_ns(),
                "supervision_url": supervision_url,
            }
        )

    async def login(request: Request) -> Response:
        """``POST /login`` ``{"token": T}``: a staff or supervisor token (never
        in a URL) becomes the console's ``pubex_token`` cookie; 401 otherwise.
        Failed logins slow their address down like every failed authentication."""
        try:
            token = _LOGIN.decode(await read_body(request, 1024)).token
        except BodyTooLarge as e:
            return json_response({"error": str(e)}, 413)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            return json_response({"error": f"body: {e}"}, 400)
        if not _TOKEN.fullmatch(token):  # a cookie value: printable ASCII only
            return json_response(AUTH_FAILED, 401)
        who = access.check_token(request, token, roles=(STAFF, SUPERVISOR))
        if isinstance(who, Response):
            return who
        response = json_response({"role": who.role, "identity": who.identity}, 200)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
        return response

    async def logout(request: Request) -> Response:
        response = json_response({"ok": True}, 200)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def metrics(request: Request) -> Response:
        """This process's series; on an edge of a split server, the whole
        server's: the sequencer's and every edge's, each labelled with its
        ``process_role`` (``sequencer`` / ``edge``) and ``process`` (its
        name), whichever edge answers."""
        own = gw.metrics.render()
        parts = await gw.core.metrics_parts()
        if parts:
            parts[gw.core.name] = own
            own = merge_texts([(_process_labels(name), text) for name, text in parts.items()])
        return Response(own, media_type="text/plain; version=0.0.4")

    @guard
    async def healthz(request: Request) -> Response:
        return json(gw.core.health(), 200 if gw.core.linked else 503)

    @guard
    async def server_time(request: Request) -> Response:
        return json({"server_time_ns": gw.core.clock_ns()})

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

    get, post = {"GET": PUBLIC}, {"POST": PUBLIC}
    rules = [
        Rule("/", index, get),
        Rule("/config.json", config, get),
        Rule("/login", login, post),
        Rule("/logout", logout, post),
        Rule("/metrics", metrics, {"GET": METRICS_READERS}),
        Rule("/healthz", healthz, get),
        Rule("/time", server_time, get),
        Rule("/api/lots", lots, get),
        Rule("/api/lots/{lot}", lot, get),
        Rule("/api/lots/{lot}/bids", bids, get),
        Rule("/api/items", items, get),
        Rule("/api/items/{item}", item, get),
        Rule("/api/items/{item}/trades", trades, get),
    ]
    routes = [
        *access.routes(rules),
        Mount("/static", StaticFiles(directory=CONSOLE_DIR, check_dir=False), name="static"),
    ]
    return Starlette(routes=routes)


def _process_labels(name: str) -> dict[str, str]:
    return {"process_role": "sequencer" if name == "sequencer" else "edge", "process": name}
