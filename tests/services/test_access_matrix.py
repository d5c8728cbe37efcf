"""The authorisation matrix (issue 12): every HTTP route and WebSocket of every
process x every role x method -> the status it must answer, written by hand.

The table is the reviewed contract, not generated from the code: a test walks
the live route tables of the four apps (the gateway's console and lots API,
the registry, supervision, disclosure) and fails when a route has no row, so a
new route cannot go unreviewed.  The other tests run the whole table against
``pubex platform`` (real processes, real sockets): anonymous and watcher send
no credentials (a watcher's browser sends the console's Origin), a bidder its
signed handshake headers (which no HTTP route takes), staff, supervisor and
service their bearer tokens.  Writes send ``{}`` as JSON: a role let through
gets the body's 400, one stopped gets 401 / 403 before the body is read.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import websocket
from nacl.signing import SigningKey
from prometheus_client import CollectorRegistry
from starlette.routing import Mount, Route, WebSocketRoute

from config.settings import LimitSettings
from gateway.wire import protocol as p
from tests import tokens

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
ROLES = ("anonymous", "watcher", "bidder", "staff", "supervisor", "service")
PROCESSES = ("gateway", "registry", "supervision", "disclosure", "platform")

PUB = (200,) * 6  # everyone
AUTH_ONLY = (401, 401, 401)  # anonymous, watcher, bidder: no credential HTTP takes

# (process, method, path) -> statuses for ROLES, in order.  Path parameters are
# filled with well-formed ids nobody created (x1), so a role let through a read
# of one thing gets 404, of a list 200.
MATRIX: dict[tuple[str, str, str], tuple[int, ...]] = {
    # -- the gateway's HTTP port: the console and public data (RULES.md §8)
    ("gateway", "GET", "/"): PUB,
    ("gateway", "GET", "/config.json"): PUB,
    ("gateway", "POST", "/login"): (400,) * 6,  # {} has no token: the body is wrong for all
    ("gateway", "POST", "/logout"): PUB,
    ("gateway", "GET", "/metrics"): PUB,  # loopback clients (these tests) only
    ("gateway", "GET", "/healthz"): PUB,
    ("gateway", "GET", "/time"): PUB,
    ("gateway", "GET", "/api/lots"): PUB,
    ("gateway", "GET", "/api/lots/{lot}"): (404,) * 6,
    ("gateway", "GET", "/api/lots/{lot}/bids"): (404,) * 6,
    ("gateway", "GET", "/api/items"): PUB,
    ("gateway", "GET", "/api/items/{item}"): (404,) * 6,
    ("gateway", "GET", "/api/items/{item}/trades"): (404,) * 6,
    ("gateway", "GET", "/static/{path}"): PUB,
    # the WebSocket port: a watcher without credentials, every role with its own
    ("gateway", "WS", "/ws"): (101,) * 6,
    # -- the registry: identities, deposits, experts are confidential (§8, §6.5.5)
    ("registry", "GET", "/api/subjects"): (*AUTH_ONLY, 200, 200, 200),
    ("registry", "GET", "/api/subjects/{sid}"): (*AUTH_ONLY, 404, 404, 404),
    ("registry", "POST", "/api/keys"): (*AUTH_ONLY, 400, 403, 400),
    ("registry", "GET", "/api/lots/{lot}"): (*AUTH_ONLY, 404, 404, 404),
    ("registry", "POST", "/api/registrations"): (*AUTH_ONLY, 400, 403, 400),
    ("registry", "GET", "/api/deposits"): (*AUTH_ONLY, 200, 200, 200),
    ("registry", "POST", "/api/deposits"): (*AUTH_ONLY, 400, 403, 400),
    ("registry", "GET", "/api/deposit-steps"): (*AUTH_ONLY, 200, 200, 200),
    ("registry", "POST", "/api/payments"): (*AUTH_ONLY, 400, 403, 400),
    ("registry", "POST", "/api/defaults"): (*AUTH_ONLY, 400, 403, 400),
    ("registry", "GET", "/api/blacklist"): (*AUTH_ONLY, 200, 200, 200),
    ("registry", "POST", "/api/blacklist"): (*AUTH_ONLY, 400, 403, 400),
    ("registry", "POST", "/api/blacklist/remove"): (*AUTH_ONLY, 400, 403, 400),
    ("registry", "GET", "/api/experts"): (*AUTH_ONLY, 200, 200, 200),
    ("registry", "POST", "/api/experts"): (*AUTH_ONLY, 400, 403, 400),
    ("registry", "GET", "/api/experts/{eid}"): (*AUTH_ONLY, 404, 404, 404),
    ("registry", "POST", "/api/relations"): (*AUTH_ONLY, 400, 403, 400),
    ("registry", "GET", "/api/draws"): (*AUTH_ONLY, 200, 200, 200),
    ("registry", "POST", "/api/draws"): (*AUTH_ONLY, 400, 403, 400),
    ("registry", "GET", "/api/draws/{did}"): (*AUTH_ONLY, 404, 404, 404),
    ("registry", "POST", "/api/draws/{did}/reveal"): (*AUTH_ONLY, 404, 403, 404),
    ("registry", "GET", "/api/draws/{did}/rerun"): (*AUTH_ONLY, 404, 404, 404),
    ("registry", "GET", "/api/intents"): (*AUTH_ONLY, 200, 200, 200),
    ("registry", "GET", "/metrics"): PUB,
    ("registry", "GET", "/healthz"): PUB,
    # -- supervision: complaints name their filers, alerts their subjects
    ("supervision", "GET", "/api/alerts"): (*AUTH_ONLY, 200, 200, 403),
    ("supervision", "GET", "/api/alerts/{alert_id}"): (*AUTH_ONLY, 404, 404, 403),
    ("supervision", "GET", "/api/lots"): (*AUTH_ONLY, 200, 200, 403),
    ("supervision", "GET", "/api/lots/{lot}"): (*AUTH_ONLY, 404, 404, 403),
    ("supervision", "GET", "/api/complaints"): (*AUTH_ONLY, 200, 200, 403),
    ("supervision", "GET", "/api/complaints/{complaint_id}"): (*AUTH_ONLY, 404, 404, 403),
    ("supervision", "WS", "/ws/alerts"): (403, 403, 403, 101, 101, 403),
    ("supervision", "GET", "/metrics"): PUB,
    ("supervision", "GET", "/healthz"): PUB,
    # -- disclosure: what RULES.md §8 makes public, to everyone
    ("disclosure", "GET", "/"): PUB,
    ("disclosure", "GET", "/lots/{lot}"): (404,) * 6,
    ("disclosure", "GET", "/api/notices"): PUB,
    ("disclosure", "GET", "/api/lots"): PUB,
    ("disclosure", "GET", "/api/lots/{lot}"): (404,) * 6,
    ("disclosure", "GET", "/checkpoints.json"): PUB,
    ("disclosure", "GET", "/metrics"): PUB,
    ("disclosure", "GET", "/healthz"): PUB,
    # -- the platform itself: its children's states (no data), and its metrics
    ("platform", "GET", "/healthz"): PUB,
    ("platform", "GET", "/metrics"): PUB,  # loopback clients (these tests) only
}

SAMPLE = {"path": "console.js", "alert_id": "1"}  # else "x1"
QUERY = {("registry", "GET", "/api/deposits"): "?lot=x1"}  # a required parameter


# ------------------------------------------------------------ the live tables


def live_routes() -> set[tuple[str, str, str]]:
    """(process, method, path) of every route the five apps serve, from the
    very functions the processes build their apps with."""
    from config.settings import load_settings
    from gateway.edge.http import build_app as gateway_app
    from gateway.entry.platform import build_app as platform_app
    from persistence.service import ServiceStore
    from services.disclosure.service import build_app as disclosure_app
    from services.registry.service import Registry
    from services.registry.service import build_app as registry_app
    from services.supervision.service import build_app as supervision_app

    found: set[tuple[str, str, str]] = {("gateway", "WS", "/ws")}  # trio-websocket's port
    apps: dict[str, Any] = {
        "gateway": gateway_app(SimpleNamespace(limits=LimitSettings()), "ws://x/ws"),  # type: ignore[arg-type]
        "supervision": supervision_app(None, None, CollectorRegistry()),  # type: ignore[arg-type]
        "disclosure": disclosure_app(None, None, None, CollectorRegistry()),  # type: ignore[arg-type]
        "platform": platform_app(None, load_settings(None), CollectorRegistry()),
    }
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        store = ServiceStore.open(Path(tmp) / "registry")
        try:
            apps["registry"] = registry_app(Registry(store, None))
        finally:
            store.close()
    for name, app in apps.items():
        for route in app.routes:
            if isinstance(route, WebSocketRoute):
                found.add((name, "WS", route.path))
            elif isinstance(route, Route):
                for method in route.methods or ():
                    if method != "HEAD":  # Starlette adds HEAD to every GET
                        found.add((name, method, route.path))
            elif isinstance(route, Mount):
                found.add((name, "GET", route.path + "/{path}"))
            else:
                raise AssertionError(f"{name}: a route of an unknown kind: {route!r}")
    return found


def test_every_live_route_has_a_reviewed_row() -> None:
    live = live_routes()
    missing = sorted(live - MATRIX.keys())
    stale = sorted(MATRIX.keys() - live)
    assert not missing, f"routes with no row in MATRIX (review who may use them): {missing}"
    assert not stale, f"rows for routes that no longer exist: {stale}"
    assert all(len(v) == len(ROLES) for v in MATRIX.values())


# ---------------------------------------------------------------- the platform


class Platform:
    def __init__(self, proc: subprocess.Popen[str], urls: dict[str, str], data: Path) -> None:
        self.proc, self.urls, self.data = proc, urls, data


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("matrix")
    cfg = tokens.platform_config(
        tmp / "platform.toml",
        "[net]\nws_port = 0\nhttp_port = 0\n"
        "[services]\nsupervision_http_port = 0\ndisclosure_http_port = 0\n"
        "registry_http_port = 0\nplatform_http_port = 0\n",
    )
    argv = [sys.executable, "-m", "gateway.entry.cli", "platform", "--config", str(cfg)]
    argv += ["--data", str(tmp / "var")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: [lines.put(x) for x in stdout], daemon=True).start()
    urls: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 60
        while len(urls) < 6 and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert proc.poll() is None, f"platform exited with {proc.returncode}"
                continue
            if line.startswith("listening ws="):
                urls["ws"] = line.split("ws=", 1)[1].split()[0]
                urls["gateway"] = line.split("http=", 1)[1].split()[0]
            elif line.startswith("service "):
                name, rest = line.split()[1:3]
                urls[name] = rest.removeprefix("http=")
        assert set(urls) == {"ws", *PROCESSES}, urls
        yield Platform(proc, urls, tmp / "var")
    finally:
        proc.terminate()
        proc.wait(60)


def request(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def role_headers(role: str, console: str) -> dict[str, str]:
    if role == "watcher":
        return {"Origin": console}
    if role == "bidder":  # a signed handshake: WebSocket only, no HTTP route takes it
        key = SigningKey.generate()
        q = p.auth_params(key, "k-matrix", int(time.time() * 1000), secrets.token_hex(12))
        return {f"X-Pubex-{k.title()}": v for k, v in q.items()}
    token = {"staff": tokens.STAFF, "supervisor": tokens.SUPERVISOR, "service": tokens.SERVICE}
    return tokens.bearer(token[role]) if role in token else {}


def fill(path: str) -> str:
    out = path
    while "{" in out:
        start, end = out.index("{"), out.index("}")
        out = out[:start] + SAMPLE.get(out[start + 1 : end], "x1") + out[end + 1 :]
    return out


def ws_status(url: str, header: list[str]) -> int:
    try:
        ws = websocket.create_connection(url, timeout=15, header=header, suppress_origin=True)
    except websocket.WebSocketBadStatusException as e:
        return int(e.status_code)
    ws.close()
    return 101


@pytest.fixture(scope="module")
def bidder_key(platform: Platform) -> tuple[str, SigningKey]:
    """A key registered through the registry's HTTP API by staff (so the matrix's
    bidder on the WebSocket is a real one) -- and ledgered with that staff id."""
    key = SigningKey.generate()
    body = {
        "key": "k-matrix",
        "bidder": "b-matrix",
        "public_key_hex": key.verify_key.encode().hex(),
    }
    headers = {**tokens.bearer(tokens.STAFF), "Content-Type": "application/json"}
    status, _, raw = request(
        platform.urls["registry"] + "api/keys", "POST", json.dumps(body).encode(), headers
    )
    assert status == 200, raw
    return "k-matrix", key


def test_the_matrix_holds_on_the_live_platform(
    platform: Platform, bidder_key: tuple[str, SigningKey]
) -> None:
    console = platform.urls["gateway"].rstrip("/")
    mismatches = []
    for (process, method, path), expected in sorted(MATRIX.items()):
        base = platform.urls["ws" if (process, method) == ("gateway", "WS") else process]
        for role, want in zip(ROLES, expected, strict=True):
            headers = role_headers(role, console)
            if method == "WS":
                if process == "gateway":
                    url = base
                    if role == "bidder":
                        key_id, key = bidder_key
                        q = p.auth_params(
                            key, key_id, int(time.time() * 1000), secrets.token_hex(12)
                        )
                        url = f"{base}?{urllib.parse.urlencode(q)}"
                        headers = {}
                else:
                    url = base.replace("http://", "ws://").rstrip("/") + path
                got = ws_status(url, [f"{k}: {v}" for k, v in headers.items()])
            else:
                body = b"{}" if method == "POST" else None
                if body is not None:
                    headers = {**headers, "Content-Type": "application/json"}
                query = QUERY.get((process, method, path), "")
                got = request(base.rstrip("/") + fill(path) + query, method, body, headers)[0]
            if got != want:
                mismatches.append(f"{process} {method} {path} as {role}: {got}, expected {want}")
    cells = sum(len(v) for v in MATRIX.values())
    print(f"authorisation matrix: {len(MATRIX)} routes x {len(ROLES)} roles = {cells} cells")
    assert not mismatches, "\n".join(mismatches)


def test_registry_writes_are_ledgered_with_the_staff_id(
    platform: Platform, bidder_key: tuple[str, SigningKey]
) -> None:
    """RULES.md §8: organiser logins are real-name and logged -- the key the
    fixture registered over HTTP as staff-01 is in the ledger as the registry
    service's command, made for staff-01."""
    from ledger.record import decode_body, decode_envelope
    from ledger.store import LedgerStore

    with LedgerStore.open(platform.data / "ledger", readonly=True) as store:
        envelopes = [
            decode_envelope(decode_body(raw).meta)
            for _s, _p, _h, raw in store.iter_entries()
            if decode_body(raw).meta
        ]
    mine = [e for e in envelopes if e.role == "service"]
    assert mine and all(e.identity == tokens.SERVICE_ID for e in mine)
    assert [e.actor for e in mine] == [tokens.STAFF_ID], mine
