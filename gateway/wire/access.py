"""Theory of operation: who may read and write what, on every HTTP route.

Every HTTP app (the gateway's console and lots API, and each companion: the
registry, supervision, disclosure) declares its routes as :class:`Rule` rows --
path, handler, and per method the roles allowed -- and :meth:`Access.routes`
wraps each handler so nothing reaches it unchecked:

* **Credentials.** ``Authorization: Bearer TOKEN`` (scripts, services) or the
  console's ``pubex_token`` cookie (set by ``POST /login``).  Tokens come from
  the config's ``[auth]`` tables and are compared in constant time
  (:class:`TokenBook`: a SHA-256 of the presented token against every entry,
  no early exit).  Public routes never look at credentials (a stale cookie does
  not stop anyone reading a public page, and a public route is no oracle).
* **Refusals.** No or wrong credentials on a protected route: 401 with one body
  for every cause; right credentials, wrong role: 403.  Each failed
  authentication slows its client address down (:class:`FailureGate`:
  exponential back-off; while it lasts every attempt from that address is
  answered 429 without looking at the token, so a guess costs the guesser time,
  not us CPU).  Failures are counted (``pubex_auth_failures_total``) and logged
  (the first, then every power of two, per address).
* **Writes are never cross-site.**  A write (any method but GET/HEAD) must send
  ``Content-Type: application/json`` (415: a cross-site form or a
  ``text/plain`` fetch cannot), and a cookie-authenticated write must carry an
  ``Origin`` the deployment allows (403), as must any write that sends one.
* **/metrics** is open to loopback clients only, or -- with ``[auth]
  metrics_token`` set -- to that bearer token only.

The authenticated principal is ``request.state.principal`` for the handler:
the registry puts the staff id into every command it ledgers on their behalf.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, Counter
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

log = logging.getLogger("pubex.access")

ANONYMOUS, WATCHER, BIDDER = "anonymous", "watcher", "bidder"
STAFF, SUPERVISOR, SERVICE = "staff", "supervisor", "service"
ROLES = (ANONYMOUS, WATCHER, BIDDER, STAFF, SUPERVISOR, SERVICE)
METRICS = "metrics"  # a pseudo-role: loopback clients, or the metrics token

# Who may do what, as sets of roles (a Rule maps each method to one of these).
PUBLIC: frozenset[str] = frozenset(ROLES)
STAFF_ONLY = frozenset({STAFF})
OFFICIALS = frozenset({STAFF, SUPERVISOR})  # staff and supervisors
REGISTRY_READERS = frozenset({STAFF, SUPERVISOR, SERVICE})
REGISTRY_WRITERS = frozenset({STAFF, SERVICE})
METRICS_READERS = frozenset({METRICS})

COOKIE = "pubex_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
AUTH_FAILED = {"error": "authentication failed"}  # one body for every cause
MAX_TOKEN_CHARS = 256

# The development tokens default.toml ships: well known, so refused outside
# --demo / --sandbox (see :func:`weak_tokens`).
DEV_TOKEN_PREFIX = "dev-"
MIN_TOKEN_CHARS = 16


class Caller(msgspec.Struct, frozen=True):
    role: str
    identity: str = ""
    via_cookie: bool = False


ANON = Caller(ANONYMOUS)


class TokenBook:
    """Tokens -> (role, identity), looked up in constant time per entry."""

    def __init__(
        self,
        *,
        staff: Mapping[str, str] | None = None,
        supervisor: Mapping[str, str] | None = None,
        service: Mapping[str, str] | None = None,
        metrics_token: str = "",
    ) -> None:
        rows: list[tuple[bytes, str, str]] = []
        for role, table in ((STAFF, staff), (SUPERVISOR, supervisor), (SERVICE, service)):
            for token, identity in (table or {}).items():
                rows.append((_digest(token), role, identity))
        if metrics_token:
            rows.append((_digest(metrics_token), METRICS, "metrics"))
        self._rows = rows
        self.has_metrics_token = bool(metrics_token)

    @classmethod
    def from_settings(cls, auth: Any) -> TokenBook:
        return cls(
            staff=auth.staff_tokens,
            supervisor=auth.supervisor_tokens,
            service=auth.service_tokens,
            metrics_token=auth.metrics_token,
        )

    def lookup(self, token: str) -> tuple[str, str] | None:
        """(role, identity) of a token, or None.  Every entry is compared (no
        early exit), each in constant time: the answer's timing does not depend
        on how much of a token was right."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        presented = _digest(token)
        found: tuple[str, str] | None = None
        for digest, role, identity in self._rows:
            if hmac.compare_digest(digest, presented) and found is None:
                found = (role, identity)
        return found


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def weak_tokens(auth: Any) -> list[str]:
    """The configured tokens nobody may run a real deployment with: the
    well-known development ones (``dev-...``) and short ones.  Named by their
    table and identity, never by the token itself."""
    weak = []
    for table in ("staff_tokens", "supervisor_tokens", "service_tokens"):
        for token, identity in getattr(auth, table).items():
            if token.startswith(DEV_TOKEN_PREFIX) or len(token) < MIN_TOKEN_CHARS:
                weak.append(f"auth.{table} ({identity})")
    metrics = getattr(auth, "metrics_token", "")
    if metrics and (metrics.startswith(DEV_TOKEN_PREFIX) or len(metrics) < MIN_TOKEN_CHARS):
        weak.append("auth.metrics_token")
    return weak


class NonceCache:
    """Nonces seen within their freshness window; bounded (oldest evicted first
    -- an evicted nonce is older than the window, so it is stale anyway)."""

    def __init__(self, ttl_s: float, max_entries: int = 200_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    def add(self, key: str, now: float) -> bool:
        """False when the nonce was seen within the window (a replay)."""
        seen = self._seen
        while seen:
            oldest_t = next(iter(seen.values()))
            if now - oldest_t <= self.ttl_s and len(seen) < self.max_entries:
                break
            seen.popitem(last=False)
        if key in seen:
            return False
        seen[key] = now
        return True


class FailureGate:
    """Failed authentications per client address: after the n-th failure in a
    row, that address waits ``base_s * 2**(n-1)`` (at most ``max_s``) before
    any credential of its is looked at again.  An address quiet for
    ``forget_s`` starts over.  Bounded: the oldest addresses are forgotten past
    ``max_addresses``."""

    def __init__(
        self,
        *,
        base_s: float = 0.1,
        max_s: float = 30.0,
        forget_s: float = 600.0,
        max_addresses: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        failures: Counter | None = None,
        surface: str = "",
    ) -> None:
        self.base_s, self.max_s, self.forget_s = base_s, max_s, forget_s
        self.max_addresses = max_addresses
        self.clock = clock
        self.surface = surface
        self._failures = failures
        # address -> (failures in a row, time of the last, not before)
        self._seen: OrderedDict[str, tuple[int, float, float]] = OrderedDict()
        # (address, failures in a row, back-off) after each failure or success
        # here: an edge tells its sequencer, the sequencer tells every edge
        self.on_change: Callable[[str, int, float], None] | None = None

    def wait_s(self, address: str) -> float:
        """0 when ``address`` may try now; else the seconds it must still wait."""
        row = self._seen.get(address)
        if row is None:
            return 0.0
        now = self.clock()
        _count, last, not_before = row
        if now - last > self.forget_s:
            del self._seen[address]
            return 0.0
        return max(0.0, not_before - now)

    def refused(self, address: str) -> None:
        """An attempt answered 429 (counted, not a failure: it was never looked at)."""
        if self._failures is not None:
            self._failures.labels(self.surface, "throttled").inc()

    def failed(self, address: str) -> float:
        """Record a failure; returns the back-off now imposed on ``address``."""
        now = self.clock()
        count, last, _ = self._seen.pop(address, (0, now, now))
        if now - last > self.forget_s:
            count = 0
        count += 1
        delay = min(self.max_s, self.base_s * 2 ** min(count - 1, 40))
        self._seen[address] = (count, now, now + delay)
        while len(self._seen) > self.max_addresses:
            self._seen.popitem(last=False)
        if self._failures is not None:
            self._failures.labels(self.surface, "failed").inc()
        if self.on_change is not None:
            self.on_change(address, count, delay)
        if count & (count - 1) == 0:  # the 1st, 2nd, 4th, 8th ... failure in a row
            log.warning(
                "%s: failed authentication #%d from %s; next attempt in %.1f s",
                self.surface or "auth",
                count,
                address,
                delay,
            )
        return delay

    def succeeded(self, address: str) -> None:
        if self._seen.pop(address, None) is not None and self.on_change is not None:
            self.on_change(address, 0, 0.0)

    def hold(self, address: str, count: int, delay_s: float) -> None:
        """What another process decided for ``address`` (count 0: forgiven):
        kept as if it had happened here, without telling anyone again."""
        if count <= 0:
            self._seen.pop(address, None)
            return
        now = self.clock()
        self._seen.pop(address, None)
        self._seen[address] = (count, now, now + max(0.0, min(delay_s, self.max_s)))
        while len(self._seen) > self.max_addresses:
            self._seen.popitem(last=False)

    def attempt(
        self, address: str, book: TokenBook, token: str, roles: Iterable[str] | None = None
    ) -> tuple[str, str] | float | None:
        """One token attempt from ``address``, the back-off kept: (role, identity)
        when ``token`` names one of ``roles`` (any, when None); None -- a failure,
        counted -- when it does not; the seconds still to wait (> 0) when the
        address is backing off (the token then is not looked at)."""
        wait = self.wait_s(address)
        if wait > 0:
            self.refused(address)
            return wait
        found = book.lookup(token)
        if found is None or (roles is not None and found[0] not in roles):
            self.failed(address)
            return None
        self.succeeded(address)
        return found


def failure_counter(registry: CollectorRegistry | None) -> Counter:
    return Counter(
        "pubex_auth_failures",
        "Failed authentications (failed) and attempts refused during a back-off "
        "(throttled), by surface",
        ["surface", "outcome"],
        registry=registry,
    )


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def console_origins(host: str, port: int) -> set[str]:
    """The Origins a browser sends from the console served at host:port."""
    origins = {f"http://{host}:{port}"}
    if is_loopback(host) or host == "localhost":
        origins |= {f"http://localhost:{port}", f"http://127.0.0.1:{port}"}
    return origins


class Rule(msgspec.Struct, frozen=True):
    """One route: its path, its handler, and per method the roles allowed."""

    path: str
    handler: Callable[..., Awaitable[Any]]
    methods: Mapping[str, frozenset[str]]
    websocket: bool = False


def json_response(data: Any, status: int) -> Response:
    return Response(msgspec.json.encode(data), status, media_type="application/json")


class Access:
    """The checks every HTTP route of one process goes through."""

    def __init__(
        self,
        book: TokenBook,
        *,
        allowed_origins: Iterable[str] = (),
        gate: FailureGate | None = None,
        surface: str = "http",
    ) -> None:
        self.book = book
        self.allowed_origins = set(allowed_origins)
        self.gate = gate or FailureGate(surface=surface)
        self.surface = surface

    def count_into(self, registry: CollectorRegistry) -> None:
        """Count failed authentications in this process's metrics."""
        if self.gate._failures is None:
            self.gate._failures = failure_counter(registry)

    # ------------------------------------------------------------ checks
    def credential(self, conn: HTTPConnection) -> tuple[str, bool]:
        """(token, from the cookie?) -- "" when none was presented."""
        header = conn.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip(), False
        cookie = conn.cookies.get(COOKIE, "")
        return cookie, bool(cookie)

    def principal(self, conn: HTTPConnection) -> Caller | Response:
        """Who is asking, or the refusal (401 / 429) to send instead."""
        token, via_cookie = self.credential(conn)
        if not token:
            return ANON
        return self.check_token(conn, token, via_cookie)

    def check_token(
        self,
        conn: HTTPConnection,
        token: str,
        via_cookie: bool = False,
        roles: Iterable[str] | None = None,
    ) -> Caller | Response:
        """The caller ``token`` names (one of ``roles``, when given), or the refusal:
        429 while the address's back-off lasts (the token unread), 401 -- counted
        as a failure -- for a token that names nobody (or no one of ``roles``)."""
        found = self.gate.attempt(_address(conn), self.book, token, roles)
        if found is None:
            return json_response(AUTH_FAILED, 401)
        if isinstance(found, float):
            return _throttled(found)
        return Caller(found[0], found[1], via_cookie)

    def allowed(self, conn: HTTPConnection, roles: frozenset[str]) -> Caller | Response:
        if roles is PUBLIC:
            return ANON
        if roles is METRICS_READERS and not self.book.has_metrics_token:
            client = conn.client
            if client is not None and is_loopback(client.host):
                return Caller(METRICS, "loopback")
            return json_response({"error": "metrics are served to loopback clients only"}, 403)
        who = self.principal(conn)
        if isinstance(who, Response):
            return who
        if who.role == ANONYMOUS:
            return json_response(AUTH_FAILED, 401)
        if who.role not in roles:
            return json_response({"error": f"{who.role} may not use this route"}, 403)
        return who

    def origin_allowed(self, conn: HTTPConnection, origin: str) -> bool:
        """A configured Origin (the console's), or this server's own."""
        if origin in self.allowed_origins:
            return True
        scheme = "https" if conn.url.scheme in ("https", "wss") else "http"
        return origin == f"{scheme}://{conn.headers.get('host', '')}"

    def cross_site(self, conn: HTTPConnection, who: Caller) -> Response | None:
        """The refusal for a write a browser could have been tricked into."""
        origin = conn.headers.get("origin")
        if origin is not None and not self.origin_allowed(conn, origin):
            return json_response({"error": f"origin {origin[:100]} not allowed"}, 403)
        if who.via_cookie and origin is None:
            return json_response({"error": "a cookie-authenticated write needs Origin"}, 403)
        if conn.headers.get("sec-fetch-site") == "cross-site":
            return json_response({"error": "cross-site write"}, 403)
        return None

    # ------------------------------------------------------------ routes
    def routes(self, rules: Iterable[Rule]) -> list[BaseRoute]:
        out: list[BaseRoute] = []
        for rule in rules:
            if rule.websocket:
                out.append(WebSocketRoute(rule.path, self._guard_ws(rule)))
            else:
                out.append(Route(rule.path, self._guard(rule), methods=list(rule.methods)))
        return out

    def _guard(self, rule: Rule) -> Callable[[Request], Awaitable[Response]]:
        handler, methods = rule.handler, rule.methods

        async def guarded(request: Request) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            roles = methods.get(method)
            if roles is None:
                return json_response({"error": "method not allowed"}, 405)
            who = self.allowed(request, roles)
            if isinstance(who, Response):
                return who
            if method not in SAFE_METHODS:
                media = request.headers.get("content-type", "").split(";")[0].strip().lower()
                if media != "application/json":
                    return json_response({"error": "a write must be application/json"}, 415)
                refused = self.cross_site(request, who)
                if refused is not None:
                    return refused
            request.state.principal = who
            response: Response = await handler(request)
            return response

        guarded.__name__ = getattr(handler, "__name__", "guarded")
        guarded.__wrapped__ = handler  # type: ignore[attr-defined]
        return guarded

    def _guard_ws(self, rule: Rule) -> Callable[[WebSocket], Awaitable[None]]:
        handler, roles = rule.handler, rule.methods["GET"]

        async def guarded(ws: WebSocket) -> None:
            origin = ws.headers.get("origin")
            if origin is not None and not self.origin_allowed(ws, origin):
                await ws.close(1008, "origin not allowed")
                return
            who = self.allowed(ws, roles)
            if isinstance(who, Response):
                # before accept: the client sees the handshake refused (HTTP 403)
                await ws.close(1008, "authentication failed")
                return
            ws.state.principal = who
            await handler(ws)

        guarded.__wrapped__ = handler  # type: ignore[attr-defined]
        return guarded


def _address(conn: HTTPConnection) -> str:
    client = conn.client
    return client.host if client is not None else ""


def _throttled(wait_s: float) -> Response:
    seconds = max(1, int(wait_s + 0.999))
    response = json_response(
        {"error": "too many failed authentications from this address", "retry_after_s": seconds},
        429,
    )
    response.headers["retry-after"] = str(seconds)
    return response


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, read no further than ``limit`` bytes (a client that
    sends more is refused, not buffered: Starlette's ``body()`` would keep it
    all in memory)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body over {limit} bytes")
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body over {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def caller_of(request: HTTPConnection) -> Caller:
    who = getattr(request.state, "principal", None)
    return who if isinstance(who, Caller) else ANON


Handler = Callable[[Request], Awaitable[Response]]


def gate_from_settings(
    auth: Any, surface: str, registry: CollectorRegistry | None = None
) -> FailureGate:
    return FailureGate(
        base_s=auth.auth_backoff_base_ms / 1000,
        max_s=float(auth.auth_backoff_max_s),
        failures=failure_counter(registry) if registry is not None else None,
        surface=surface,
    )


def access_from_settings(
    auth: Any,
    surface: str,
    *,
    registry: CollectorRegistry | None = None,
    origins: Iterable[str] = (),
    gate: FailureGate | None = None,
) -> Access:
    """One process's Access: the config's tokens; writes allowed from the
    configured browser Origins and ``origins`` (the console's own)."""
    return Access(
        TokenBook.from_settings(auth),
        allowed_origins={*auth.allowed_origins, *origins},
        gate=gate or gate_from_settings(auth, surface, registry),
        surface=surface,
    )


def dev_token_refusal(auth: Any, demo: bool, config_flag: str = "--config") -> str:
    """Why a server must not start with these tokens ("" = it may): outside
    ``--demo`` / ``--sandbox`` the well-known development tokens and short ones
    are refused -- anyone who read the README could use them."""
    if demo:
        return ""
    weak = weak_tokens(auth)
    if not weak:
        return ""
    return (
        f"refusing to start: {', '.join(weak)} "
        f"{'is a' if len(weak) == 1 else 'are'} well-known development or short token"
        f"{'' if len(weak) == 1 else 's'}; put tokens of at least {MIN_TOKEN_CHARS} "
        f"characters not starting {DEV_TOKEN_PREFIX!r} in your own config file ({config_flag}), "
        "or run a demo (--demo) or a sandbox (--sandbox)"
    )
