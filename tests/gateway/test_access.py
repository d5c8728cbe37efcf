"""gateway.wire.access (issue 12): failed authentications slowed per address, tokens
compared whole, writes never cross-site, /metrics loopback or token, login a
POST, and servers that refuse the well-known development tokens.

The HTTP apps are driven over ASGI in-process (the same Starlette apps the
processes serve) or as a real server; the back-off runs on a fake clock where
its timing is asserted, never on sleeps."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio_websocket
from prometheus_client import CollectorRegistry

from config.settings import load_settings
from gateway.wire.access import (
    AUTH_FAILED,
    Access,
    FailureGate,
    TokenBook,
    dev_token_refusal,
    weak_tokens,
)
from persistence.service import ServiceStore
from services.registry.service import Registry
from services.registry.service import build_app as registry_app
from services.supervision.service import build_app as supervision_app
from tests import tokens

REPO = Path(__file__).resolve().parents[2]
CONSOLE = "http://127.0.0.1:8080"


class Accepted(Exception):
    pass


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def call(
    app: Any,
    method: str,
    path: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    client: str = "127.0.0.1",
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request through the app's ASGI interface."""
    raw_path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "method": method,
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        + [(b"host", b"127.0.0.1:8094")],
        "root_path": "",
        "scheme": "http",
        "server": ("127.0.0.1", 8094),
        "client": (client, 50000),
        "http_version": "1.1",
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    head = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    raw = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], head, raw


def book() -> TokenBook:
    return TokenBook(
        staff={tokens.STAFF: tokens.STAFF_ID},
        supervisor={tokens.SUPERVISOR: tokens.SUPERVISOR_ID},
        service={tokens.SERVICE: tokens.SERVICE_ID},
    )


@pytest.fixture
def registry(tmp_path: Path) -> Any:
    store = ServiceStore.open(tmp_path / "registry")
    try:
        yield registry_app(Registry(store, None), Access(book(), allowed_origins={CONSOLE}))
    finally:
        store.close()


# ------------------------------------------------------------------ tokens


def test_token_book_matches_whole_tokens_only() -> None:
    b = book()
    assert b.lookup(tokens.STAFF) == ("staff", tokens.STAFF_ID)
    assert b.lookup(tokens.SERVICE) == ("service", tokens.SERVICE_ID)
    for wrong in ("", tokens.STAFF[:-1], tokens.STAFF + "x", tokens.STAFF.upper(), "x" * 10_000):
        assert b.lookup(wrong) is None, wrong
    assert b.lookup("\udcff") is None  # a lone surrogate (from a bad cookie) is just wrong


def test_weak_and_development_tokens_are_named_never_shown() -> None:
    auth = load_settings().auth  # default.toml: the dev-* tokens
    weak = weak_tokens(auth)
    assert weak == [
        "auth.staff_tokens (staff-01)",
        "auth.supervisor_tokens (supervisor-01)",
        "auth.service_tokens (registry)",
    ]
    refusal = dev_token_refusal(auth, demo=False)
    assert "dev-staff-token" not in refusal and "refusing to start" in refusal
    assert dev_token_refusal(auth, demo=True) == ""
    short = load_settings(overrides={"auth.staff_tokens": {"abc123": "s"}}).auth
    assert "auth.staff_tokens (s)" in weak_tokens(short)


def test_serve_and_companions_refuse_development_tokens_outside_demo(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "gateway.entry.cli"]
    runs = {
        "serve": [*cli, "serve", "--data", str(tmp_path / "d1"), "--ws-port", "0"],
        "disclose": [*cli, "disclose", "--data", str(tmp_path / "d2"), "--http-port", "0"],
        "supervise": [*cli, "supervise", "--data", str(tmp_path / "d3"), "--http-port", "0"],
        "registry": [*cli, "registry", "--data", str(tmp_path / "d4"), "--http-port", "0"],
    }
    for name, argv in runs.items():
        done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=60)
        assert done.returncode == 2, (name, done.stdout, done.stderr)
        assert "well-known development" in done.stderr, (name, done.stderr)
        assert "dev-staff-token" not in done.stderr + done.stdout


# ---------------------------------------------------------------- back-off


def test_failure_gate_backs_off_exponentially_and_forgets() -> None:
    clock = FakeClock()
    gate = FailureGate(base_s=0.1, max_s=30.0, forget_s=600.0, clock=clock)
    assert gate.wait_s("1.2.3.4") == 0
    delays = [gate.failed("1.2.3.4") for _ in range(12)]
    assert delays[:5] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert delays[-1] == 30.0  # capped
    assert gate.wait_s("1.2.3.4") == pytest.approx(30.0)
    assert gate.wait_s("5.6.7.8") == 0  # per address
    clock.now += 30.0
    assert gate.wait_s("1.2.3.4") == 0
    assert gate.failed("1.2.3.4") == 30.0  # still in a row
    clock.now += 601
    assert gate.wait_s("1.2.3.4") == 0
    assert gate.failed("1.2.3.4") == pytest.approx(0.1)  # quiet long enough: forgotten
    gate.succeeded("1.2.3.4")
    assert gate.wait_s("1.2.3.4") == 0


def test_failure_gate_is_bounded() -> None:
    gate = FailureGate(max_addresses=100, clock=FakeClock())
    for i in range(1000):
        gate.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(gate._seen) == 100


def attempts_per_minute(base_s: float, max_s: float, minutes: int) -> list[int]:
    """How many guesses one address gets checked, minute by minute, if it
    guesses as fast as it may (every guess wrong)."""
    clock = FakeClock()
    gate = FailureGate(base_s=base_s, max_s=max_s, clock=clock)
    start, counts = clock.now, [0] * minutes
    while clock.now < start + 60 * minutes:
        counts[int((clock.now - start) // 60)] += 1
        clock.now += gate.failed("6.6.6.6")
    return counts


def test_guesses_per_address_after_the_slowdown() -> None:
    """The default back-off (100 ms doubling, 30 s cap): 10 guesses in the first
    minute, then 2 a minute (0.033 per second) -- 3,000 guesses take 25 hours."""
    counts = attempts_per_minute(0.1, 30.0, 10)
    assert counts[0] == 10 and counts[1:] == [2] * 9, counts


async def test_brute_force_over_http_is_slowed_and_never_an_oracle(tmp_path: Path) -> None:
    clock = FakeClock()
    gate = FailureGate(base_s=0.1, max_s=30.0, clock=clock)
    store = ServiceStore.open(tmp_path / "registry")
    try:
        app = registry_app(Registry(store, None), Access(book(), gate=gate))
        statuses = []
        for i in range(3000):  # as fast as it can: the clock does not move
            status, *_ = await call(
                app, "GET", "/api/subjects", headers=tokens.bearer(f"guess-{i:06d}-padding")
            )
            statuses.append(status)
        assert statuses.count(401) == 1 and statuses.count(429) == 2999
        # while the back-off lasts even the right token is not looked at
        status, head, _ = await call(
            app, "GET", "/api/subjects", headers=tokens.bearer(tokens.STAFF)
        )
        assert status == 429 and int(head["retry-after"]) >= 1
        assert await call(app, "GET", "/api/subjects", client="10.9.9.9")  # others unaffected
        status, *_ = await call(
            app, "GET", "/api/subjects", headers=tokens.bearer(tokens.STAFF), client="10.9.9.9"
        )
        assert status == 200
        clock.now += 0.1
        status, *_ = await call(app, "GET", "/api/subjects", headers=tokens.bearer(tokens.STAFF))
        assert status == 200
    finally:
        store.close()


async def test_failed_handshakes_back_off_on_the_websocket(server_factory) -> None:
    """The gateway's handshake shares the gate: after a wrong token the address
    waits (HTTP 429), and every failure has the same 401 body."""
    from tests.gateway.conftest import STAFF_TOKEN

    srv = await server_factory({"auth.auth_backoff_base_ms": 60_000})
    bodies, statuses = set(), []
    for token in ("wrong-1", "wrong-2", STAFF_TOKEN):
        auth = [(b"Authorization", f"Bearer {token}".encode())]
        with pytest.raises(trio_websocket.ConnectionRejected) as info, trio.fail_after(10):
            async with trio_websocket.open_websocket_url(srv.ws_url, extra_headers=auth):
                raise AssertionError("accepted")
        statuses.append(info.value.status_code)
        bodies.add(info.value.body)
    assert statuses == [401, 429, 429]
    assert b"authentication failed" in bodies


# ---------------------------------------------------------------- cross-site


async def test_writes_are_never_cross_site(registry: Any) -> None:
    """A browser on another site can send a cookie with a form or a text/plain
    fetch, and always its Origin: each is refused before the body is read."""
    body = json.dumps({"bidder": "b1", "reason": "r"}).encode()
    jsn = {"Content-Type": "application/json"}
    cookie = {"Cookie": f"pubex_token={tokens.STAFF}"}
    bearer = tokens.bearer(tokens.STAFF)
    cases = [
        ({**bearer, "Content-Type": "text/plain"}, 415),
        ({**bearer, "Content-Type": "application/x-www-form-urlencoded"}, 415),
        ({**bearer, "Content-Type": "multipart/form-data; boundary=x"}, 415),
        (bearer, 415),  # no content type at all
        ({**cookie, "Content-Type": "text/plain", "Origin": CONSOLE}, 415),
        ({**cookie, **jsn}, 403),  # a cookie without Origin
        ({**cookie, **jsn, "Origin": "http://evil.example"}, 403),
        ({**cookie, **jsn, "Origin": "null"}, 403),
        ({**bearer, **jsn, "Origin": "http://evil.example"}, 403),
        ({**cookie, **jsn, "Origin": CONSOLE, "Sec-Fetch-Site": "cross-site"}, 403),
        # allowed: through to the handler (read-only registry: 503, nothing written)
        ({**cookie, **jsn, "Origin": CONSOLE}, 503),
        ({**cookie, **jsn, "Origin": "http://127.0.0.1:8094"}, 503),  # its own origin
        ({**bearer, **jsn}, 503),
    ]
    for headers, want in cases:
        status, _, reply = await call(
            registry, "POST", "/api/blacklist", body=body, headers=headers
        )
        assert status == want, (headers, status, reply)


async def test_supervision_websocket_needs_an_official_and_an_allowed_origin() -> None:
    no_backoff = FailureGate(base_s=0.0)  # several refusals in a row from one address
    access = Access(book(), allowed_origins={CONSOLE}, gate=no_backoff)
    app = supervision_app(None, None, CollectorRegistry(), None, access)  # type: ignore[arg-type]

    async def handshake(headers: dict[str, str]) -> str:
        scope = {
            "type": "websocket",
            "path": "/ws/alerts",
            "raw_path": b"/ws/alerts",
            "query_string": b"since=0",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
            + [(b"host", b"127.0.0.1:8092")],
            "root_path": "",
            "scheme": "ws",
            "server": ("127.0.0.1", 8092),
            "client": ("127.0.0.1", 50000),
            "subprotocols": [],
        }
        sent: list[dict[str, Any]] = []
        got = [{"type": "websocket.connect"}]

        async def receive() -> dict[str, Any]:
            return got.pop() if got else {"type": "websocket.disconnect", "code": 1000}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "websocket.accept":
                raise Accepted  # enough: the feed itself is tested elsewhere

        with contextlib.suppress(Accepted):
            await app(scope, receive, send)
        return sent[0]["type"] if sent else "none"

    cookie = {"Cookie": f"pubex_token={tokens.SUPERVISOR}"}
    assert await handshake({}) == "websocket.close"
    assert await handshake({"Origin": CONSOLE}) == "websocket.close"
    assert await handshake({**cookie, "Origin": "http://evil.example"}) == "websocket.close"
    assert await handshake({"Cookie": f"pubex_token={tokens.SERVICE}"}) == "websocket.close"
    assert await handshake({"Cookie": "pubex_token=wrong"}) == "websocket.close"
    assert await handshake({**cookie, "Origin": CONSOLE}) == "websocket.accept"
    assert await handshake(tokens.bearer(tokens.STAFF)) == "websocket.accept"


# ------------------------------------------------------------------ metrics


async def test_metrics_loopback_only_or_behind_their_token(tmp_path: Path) -> None:
    store = ServiceStore.open(tmp_path / "registry")
    try:
        reg = Registry(store, None)
        open_app = registry_app(reg, Access(book()))
        assert (await call(open_app, "GET", "/metrics"))[0] == 200
        assert (await call(open_app, "GET", "/metrics", client="::1"))[0] == 200
        assert (await call(open_app, "GET", "/metrics", client="10.0.0.7"))[0] == 403
        locked = Access(
            TokenBook(staff={tokens.STAFF: tokens.STAFF_ID}, metrics_token=tokens.METRICS)
        )
        app = registry_app(Registry(store, None, metrics_registry=CollectorRegistry()), locked)
        assert (await call(app, "GET", "/metrics"))[0] == 401
        assert (await call(app, "GET", "/metrics", headers=tokens.bearer(tokens.STAFF)))[0] == 403
        status, _, body = await call(app, "GET", "/metrics", headers=tokens.bearer(tokens.METRICS))
        assert status == 200 and b"pubex_auth_failures" in body
        status, _, body = await call(
            app, "GET", "/metrics", headers=tokens.bearer(tokens.METRICS), client="10.0.0.7"
        )
        assert status == 200
    finally:
        store.close()


# -------------------------------------------------------------------- login


async def test_login_is_a_post_with_the_token_in_the_body(server) -> None:
    from tests.gateway.conftest import STAFF_TOKEN

    def post(path: str, body: object, headers: dict[str, str] | None = None) -> Any:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(
            server.http_url + path.lstrip("/"),
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    status, head, body = await trio.to_thread.run_sync(post, "/login", {"token": "wrong-token"})
    assert status == 401 and msgspec.json.decode(body) == AUTH_FAILED
    assert head.get("set-cookie") is None
    status, head, body = await trio.to_thread.run_sync(post, "/login", {"token": STAFF_TOKEN})
    assert status == 200 and json.loads(body) == {"role": "staff", "identity": "staff-01"}
    cookie = head["set-cookie"]
    assert cookie.startswith(f"pubex_token={STAFF_TOKEN};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    status, head, body = await trio.to_thread.run_sync(
        post, "/login", {"token": STAFF_TOKEN}, {"Origin": "http://evil.example"}
    )
    assert status == 403
    status, head, _ = await trio.to_thread.run_sync(post, "/logout", {})
    assert status == 200 and 'pubex_token=""' in head["set-cookie"]
    assert "Max-Age=0" in head["set-cookie"] or "expires" in head["set-cookie"].lower()

    def get_login() -> int:
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(f"{server.http_url}login?token={STAFF_TOKEN}", timeout=10)
            return 200
        except urllib.error.HTTPError as e:
            return e.code

    assert await trio.to_thread.run_sync(get_login) == 405  # no token in any URL


async def test_public_and_staff_bodies_are_read_only_up_to_their_bound(server, registry) -> None:
    """An anonymous POST /login past 1 KiB is refused 413 -- by its declared length,
    or once 1 KiB of a chunked body has come (never buffered whole) -- and a staff
    write past max_frame_bytes 400 frame_too_large."""

    def post_big(size: int, declared: bool) -> int:
        import http.client

        host, port = server.http_url.split("//")[1].rstrip("/").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        body = b'{"token": "' + b"a" * size + b'"}'
        headers = {"Content-Type": "application/json"}
        if declared:
            conn.request("POST", "/login", body, headers)
        else:  # chunked: no Content-Length to go by
            conn.request("POST", "/login", iter([body]), headers, encode_chunked=True)
        status = conn.getresponse().status
        conn.close()
        return status

    assert await trio.to_thread.run_sync(post_big, 32 << 10, True) == 413
    assert await trio.to_thread.run_sync(post_big, 32 << 10, False) == 413
    big = json.dumps({"bidder": "b1", "reason": "r" * 20_000}).encode()
    headers = {**tokens.bearer(tokens.STAFF), "Content-Type": "application/json"}
    status, _, reply = await call(registry, "POST", "/api/blacklist", body=big, headers=headers)
    assert status == 400 and json.loads(reply)["code"] == "frame_too_large"
