"""Every route of every HTTP app, fed odd parameters (issue 12 point 5): never a
5xx, and a malformed parameter answers 400 with the one typed body
``{"error": ..., "code": "bad_parameter", "field": NAME}``.

The routes are walked from the live Starlette route tables -- the gateway's
(a real in-process server) and the three companions' (their apps over a real
ledger, served by hypercorn on port 0) -- so a new route is exercised as soon
as it exists: each path parameter gets odd values by its name
(``PATH_KINDS``), and the query parameters a route reads come from
``QUERY_PARAMS``, which must name every route and every query parameter its
handler's source reads."""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from prometheus_client import CollectorRegistry
from starlette.routing import Mount, Route, WebSocketRoute

from gateway.edge.http import build_app as gateway_app
from gateway.wire.access import Access, FailureGate, TokenBook
from gateway.wire.http import serve_http
from ledger.store import LedgerStore
from persistence.service import ServiceStore
from services.disclosure.checkpoints import CheckpointPublisher
from services.disclosure.projection import DisclosureProjection, DisclosureReader
from services.disclosure.service import build_app as disclosure_app
from services.disclosure.service import server_pub_of
from services.follower import Follower
from services.registry.service import Registry
from services.registry.service import build_app as registry_app
from services.supervision.projection import SupervisionProjection, SupervisionReader
from services.supervision.service import build_app as supervision_app
from tests import tokens
from tests.gateway.conftest import Server, connect_staff, create_lot
from tests.ledger.conftest import signed_ledger

# The query parameters each route reads, and their kind.  A route missing here,
# or a handler reading a parameter not listed, fails test_the_tables_name_every_route.
QUERY_PARAMS: dict[str, dict[str, dict[str, str]]] = {
    "gateway": {
        "/": {},
        "/config.json": {},
        "/login": {},  # the token is in the POST body (tests/gateway/test_access.py)
        "/logout": {},
        "/metrics": {},
        "/healthz": {},
        "/time": {},
        "/api/lots": {},
        "/api/lots/{lot}": {},
        "/api/lots/{lot}/bids": {},
        "/api/items": {},
        "/api/items/{item}": {},
        "/api/items/{item}/trades": {},
        "/static/{path}": {},
    },
    "registry": {
        "/api/subjects": {"after": "cursor", "limit": "int"},
        "/api/subjects/{sid}": {},
        "/api/keys": {},
        "/api/lots/{lot}": {},
        "/api/registrations": {},
        "/api/deposits": {"lot": "id"},
        "/api/deposit-steps": {"since": "int", "limit": "int"},
        "/api/payments": {},
        "/api/defaults": {},
        "/api/blacklist": {},
        "/api/blacklist/remove": {},
        "/api/experts": {},
        "/api/experts/{eid}": {},
        "/api/relations": {},
        "/api/draws": {},
        "/api/draws/{did}": {},
        "/api/draws/{did}/reveal": {},
        "/api/draws/{did}/rerun": {},
        "/api/intents": {"since": "int", "limit": "int"},
        "/metrics": {},
        "/healthz": {},
    },
    "supervision": {
        "/api/alerts": {"since": "int", "limit": "int", "lot": "id"},
        "/api/alerts/{alert_id}": {},
        "/api/lots": {"after": "cursor", "limit": "int"},
        "/api/lots/{lot}": {},
        "/api/complaints": {"since": "int", "limit": "int", "lot": "id"},
        "/api/complaints/{complaint_id}": {},
        "/ws/alerts": {"since": "int", "lot": "id"},
        "/metrics": {},
        "/healthz": {},
    },
    "disclosure": {
        "/": {},
        "/lots/{lot}": {},
        "/api/notices": {"since": "int", "limit": "int", "lot": "id"},
        "/api/lots": {},
        "/api/lots/{lot}": {},
        "/checkpoints.json": {"since": "int", "limit": "int"},
        "/metrics": {},
        "/healthz": {},
    },
}
# Path parameters by name: "int", "id", or "file" (static files: never a 5xx).
PATH_KINDS = {
    "lot": "id",
    "item": "id",
    "sid": "id",
    "eid": "id",
    "did": "id",
    "complaint_id": "id",
    "alert_id": "int",
    "path": "file",
}
GOOD = {"int": "1", "id": "R-1", "cursor": "R-1", "token": "t0k", "file": "console.js"}

# Odd values, as written into the request target (already percent-encoded).
# (value, malformed): malformed ones must answer 400 with the typed body.
_ODD_NUMBERS = [
    ("18446744073709551616", True),  # 2^64
    ("9223372036854775808", True),  # 2^63
    ("-1", True),
    ("abc", True),
    ("1e3", True),
    ("0x10", True),
    ("%2B5", True),  # "+5"
    ("%205", True),  # " 5"
    ("1_000", True),
    ("%EF%BC%91%EF%BC%92", True),  # fullwidth "12"
    ("9" * 600, True),
    ("%FF%FE", True),  # not UTF-8
    ("%00", True),
    ("1.5", True),
]
_ODD_IDS = [
    ("a" * 600, True),
    ("%FF%FE", True),
    ("%00", True),
    ("a%20b", True),
    ("k%E2%80%8B1", True),  # a zero-width space: a look-alike
    ("%E4%B8%AD", True),  # not in the default id pattern
    ("%25", True),
    ("%C0%AF", True),  # an over-long "/"
    ("*", True),
    ("a%2Fb", False),  # decodes to a "/": another route or none
    ("%2E%2E", False),  # ".." matches the id pattern: unknown, not malformed
]
ODD: dict[str, list[tuple[str, bool]]] = {
    "int": _ODD_NUMBERS,
    "id": [("", True), *_ODD_IDS],
    "cursor": [("", False), *_ODD_IDS],  # an empty cursor is the first page
    "token": [("", False), ("%FF", False), ("a" * 600, False), ("%00", False)],
}
PATH_ODD: dict[str, list[tuple[str, bool]]] = {
    "int": _ODD_NUMBERS,
    "id": _ODD_IDS,
    "file": [("a" * 600, False), ("%00", False), ("%FF%FE", False), ("..%2F..%2Fetc", False)],
}
# Raw bytes that are not UTF-8 in the request target (not percent-encoded): the
# HTTP server refuses them (400) before any app sees them -- never a 5xx.
RAW_TAILS = [b"\xff\xfe", b"\xc0\xaf", b"a\x80b"]

# Headers per app: a staff token where the routes need one (staff may read and write
# the registry and read supervision; the gateway and disclosure are public).
HEADERS: dict[str, dict[str, str]] = {name: {} for name in QUERY_PARAMS}
HEADERS["registry"] = HEADERS["supervision"] = tokens.bearer(tokens.STAFF)
ACCESS = Access(TokenBook(staff={tokens.STAFF: tokens.STAFF_ID}), gate=FailureGate(base_s=0.0))


# ----------------------------------------------------------------- client


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


async def request(
    base: str,
    method: str,
    target: bytes,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One HTTP/1.1 request with exactly ``target`` as its request target (no
    client-side quoting), ``Connection: close``; read to EOF."""
    host, port = base.split("//", 1)[1].rstrip("/").rsplit(":", 1)
    head = [f"{method} ".encode() + target + b" HTTP/1.1", f"Host: {host}:{port}".encode()]
    base_headers = {"Connection": "close", "Content-Length": "0"}
    if method == "POST":  # every write is JSON (gateway.wire.access); the body here is empty
        base_headers["Content-Type"] = "application/json"
    for k, v in {**base_headers, **(headers or {})}.items():
        head.append(f"{k}: {v}".encode())
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(b"\r\n".join(head) + b"\r\n\r\n")
            buf = b""
            while b"\r\n\r\n" not in buf and (chunk := await stream.receive_some(65536)):
                buf += chunk
            top, _, body = buf.partition(b"\r\n\r\n")
            lines = top.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            hdrs = {
                k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])
            }
            size = int(hdrs.get("content-length", -1))
            while status != 101 and (size < 0 or len(body) < size):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                body += chunk
    if hdrs.get("transfer-encoding") == "chunked":
        out, rest = b"", body
        while rest:
            size_hex, _, rest = rest.partition(b"\r\n")
            n = int(size_hex, 16)
            if not n:
                break
            out, rest = out + rest[:n], rest[n + 2 :]
        body = out
    return Answer(status, hdrs, body)


# ------------------------------------------------------------- the apps


@dataclass
class App:
    name: str
    base: str
    routes: list[Any]
    headers: dict[str, str] = field(default_factory=dict)


def route_path(route: Any) -> str:
    return f"{route.path}/{{path}}" if isinstance(route, Mount) else route.path


def route_params(route: Any) -> list[str]:
    if isinstance(route, Mount):
        return ["path"]
    return list(route.param_convertors)


_READS = re.compile(
    r'query_params(?:\.get\(|\[)\s*"(\w+)"'
    r'|\b(?!path_)\w+\(\s*(?:request|ws),\s*"(\w+)"'
)


def query_reads(route: Any) -> set[str]:
    """The query parameters a route's handler reads, from its source."""
    if isinstance(route, Mount):
        return set()
    fn = inspect.unwrap(route.endpoint)
    return {next(g for g in m if g) for m in _READS.findall(inspect.getsource(fn))}


@pytest.fixture
def ledger_data(tmp_path: Path) -> Path:
    """A real ledger (server key, signed checkpoints) for the companions to follow."""
    return signed_ledger(tmp_path / "svc", bids=6, checkpoint_every=2)


@pytest.fixture
async def companions(ledger_data: Path) -> AsyncIterator[list[App]]:
    """The three companion apps, each served on its own port over one ledger."""
    ledger = LedgerStore.open(ledger_data / "ledger", readonly=True)
    stores = [ServiceStore.open(ledger_data / n) for n in ("supervision", "disclosure", "registry")]
    try:
        async with trio.open_nursery() as nursery:
            yield await companion_apps(nursery, ledger_data, ledger, stores)
            nursery.cancel_scope.cancel()
    finally:
        for s in stores:
            s.close()
        ledger.close()


async def companion_apps(
    nursery: trio.Nursery, data: Path, ledger: LedgerStore, stores: list[ServiceStore]
) -> list[App]:
    shutdown = trio.Event()

    async def served(name: str, app: Any, follower: Follower) -> App:
        await nursery.start(follower.run)
        port = await nursery.start(serve_http, app, "127.0.0.1", 0, shutdown)
        return App(name, f"http://127.0.0.1:{port}/", list(app.routes), HEADERS[name])

    sv_proj = SupervisionProjection()
    sv_follower = Follower("supervision", ledger, stores[0], [sv_proj])
    sv = supervision_app(
        SupervisionReader(stores[0]), sv_follower, CollectorRegistry(), access=ACCESS
    )
    dc_follower = Follower("disclosure", ledger, stores[1], [DisclosureProjection()])
    pub = server_pub_of(data)
    assert pub is not None
    dc = disclosure_app(
        DisclosureReader(stores[1]),
        dc_follower,
        CheckpointPublisher(ledger, stores[1], pub),
        CollectorRegistry(),
    )
    reg = Registry(stores[2], ledger)
    assert reg.follower is not None
    apps = [
        await served("supervision", sv, sv_follower),
        await served("disclosure", dc, dc_follower),
        await served("registry", registry_app(reg, ACCESS), reg.follower),
    ]
    return apps


def cases(app: App) -> Iterator[tuple[str, str, bytes, str, bool, bool]]:
    """(route, method, target, field, malformed, websocket) for every odd value."""
    for route in app.routes:
        path = route_path(route)
        ws = isinstance(route, WebSocketRoute)
        methods = getattr(route, "methods", None) or {"GET"}
        method = "GET" if "GET" in methods else "POST"
        params = route_params(route)
        good = {n: GOOD[PATH_KINDS[n]] for n in params}

        def fill(values: dict[str, str], path: str = path) -> str:
            for n, v in values.items():
                path = path.replace("{" + n + "}", v)
            return path

        for name in params:
            for value, malformed in PATH_ODD[PATH_KINDS[name]]:
                yield path, method, fill({**good, name: value}).encode(), name, malformed, ws
            for tail in RAW_TAILS:
                yield path, method, fill({**good, name: ""}).encode() + tail, name, False, ws
        reads = QUERY_PARAMS[app.name][path]
        for name, kind in reads.items():
            base = fill(good)
            for value, malformed in ODD[kind]:
                yield path, method, f"{base}?{name}={value}".encode(), name, malformed, ws
            yield path, method, f"{base}?{name}=".encode() + RAW_TAILS[0], name, False, ws
            yield path, method, f"{base}?{name}=1&{name}=-1".encode(), name, False, ws


WS_HEADERS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


async def check_app(app: App) -> list[str]:
    """Every odd request against ``app``; the list of what went wrong."""
    wrong: list[str] = []
    for _route, method, target, name, malformed, ws in cases(app):
        headers = {**app.headers, **(WS_HEADERS if ws else {})}
        got = await request(app.base, method, target, headers)
        what = f"{app.name} {method} {target[:80]!r} -> {got.status} {got.body[:120]!r}"
        if got.status >= 500 or (ws and malformed and got.status == 101):
            wrong.append(what)
        elif malformed and not ws and name != "token":
            body = got.json() if got.headers.get("content-type") == "application/json" else None
            if got.status != 400 or not (
                isinstance(body, dict)
                and body.get("code") == "bad_parameter"
                and body.get("field") == name
                and isinstance(body.get("error"), str)
                and set(body) == {"error", "code", "field"}
            ):
                wrong.append(what + f" (expected 400 bad_parameter field={name})")
    # and well-formed reads never fail either
    for route in app.routes:
        if isinstance(route, Route) and "GET" in (route.methods or ()):
            params = {n: GOOD[PATH_KINDS[n]] for n in route.param_convertors}
            target = route.path
            for n, v in params.items():
                target = target.replace("{" + n + "}", v)
            got = await request(app.base, "GET", target.encode(), app.headers)
            if got.status >= 500:
                wrong.append(f"{app.name} GET {target} -> {got.status} {got.body[:120]!r}")
    return wrong


def all_routes(apps: list[App]) -> list[tuple[str, Any]]:
    return [(a.name, r) for a in apps for r in a.routes]


async def test_the_tables_name_every_route(server: Server, companions: list[App]) -> None:
    apps = [App("gateway", server.http_url, build_gateway_routes(server)), *companions]
    problems = []
    for name, route in all_routes(apps):
        path = route_path(route)
        table = QUERY_PARAMS[name]
        if path not in table:
            problems.append(f"{name} {path}: add it to QUERY_PARAMS (the query params it reads)")
            continue
        if query_reads(route) != set(table[path]):
            problems.append(
                f"{name} {path}: reads {sorted(query_reads(route))}, listed {table[path]}"
            )
        for param in route_params(route):
            if param not in PATH_KINDS:
                problems.append(f"{name} {path}: add path parameter {param!r} to PATH_KINDS")
    assert not problems, "\n".join(problems)


def build_gateway_routes(server: Server) -> list[Any]:
    """The gateway's route table as ``serve`` builds it."""
    return list(gateway_app(server.gateway, server.ws_url).routes)


async def test_gateway_routes_answer_odd_parameters_typed(server: Server) -> None:
    app = App("gateway", server.http_url, build_gateway_routes(server), HEADERS["gateway"])
    wrong = await check_app(app)
    assert not wrong, "\n".join(wrong)


async def test_companion_routes_answer_odd_parameters_typed(companions: list[App]) -> None:
    wrong: list[str] = []
    for app in companions:
        wrong += await check_app(app)
    assert not wrong, "\n".join(wrong)


async def test_a_known_lot_still_reads(server: Server, nursery) -> None:
    staff = await connect_staff(nursery, server)
    await create_lot(staff, "R-1")
    got = await request(server.http_url, "GET", b"/api/lots/R-1", HEADERS["gateway"])
    assert got.status == 200 and got.json()["lot"] == "R-1"
    got = await request(server.http_url, "GET", b"/api/lots/R-2", HEADERS["gateway"])
    assert got.status == 404
