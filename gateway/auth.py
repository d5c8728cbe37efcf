"""Theory of operation: authentication at the WebSocket handshake.

Nothing flows before the connection is accepted, so every check here runs on
the upgrade request and a failure is an HTTP status:

* ``Origin`` -- sent by browsers only: when present it must be an allowed
  origin (the console's own by default), else 403.  Non-browser terminals
  send none.
* Bidders: ``key``, ``ts`` (ms), ``nonce`` and ``sig`` in the query string
  (browsers cannot set upgrade headers) or as ``X-Pubex-*`` headers.  The
  signature is Ed25519 over ``pubex-auth-v1|key|ts|nonce`` by the key the
  ledger registered under that id; ``ts`` must be within the window of the
  server's time and the nonce never seen before (within twice the window),
  so a captured upgrade request cannot be replayed.  Else 401.
* Staff and supervisors: a token from the config (query ``token`` or the
  console's ``pubex_token`` cookie).  Unknown token: 401.
* Services (the registry): a token from ``service_tokens``; the connection's
  role is ``service`` and its commands' origin ``service:<id>``.
* No credentials: a public watcher (read-only), if watchers are allowed.
* Any client may name its ``session`` (query ``session`` or header
  ``X-Pubex-Session``; 1-64 of ``[A-Za-z0-9._-]``, else 400; absent = the
  default session ""): the engine numbers client_seq per (origin, session), so
  two clients of one identity never collide.  Every command of the connection
  carries it; a client reconnecting with its session continues its numbering.

The client IP and a device fingerprint (a hash of the user agent and the
client's ``device`` id) are kept with the connection and ledgered with each of
its commands, for the supervision rules.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import OrderedDict
from urllib.parse import parse_qs, urlsplit

import msgspec
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from engine.messages import SESSION_PATTERN
from engine.state import EngineState
from gateway.protocol import auth_message

BIDDER, STAFF, SUPERVISOR, WATCHER = "bidder", "staff", "supervisor", "watcher"
SERVICE = "service"
_SESSION = re.compile(SESSION_PATTERN).fullmatch


class Principal(msgspec.Struct, frozen=True):
    role: str
    identity: str  # key id (bidder), staff / supervisor id, "" (watcher)
    bidder_id: str = ""
    ip: str = ""
    fingerprint: str = ""
    session: str = ""  # the client's session id ("" = the default session)


class AuthError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


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


class Authenticator:
    def __init__(
        self,
        *,
        staff_tokens: dict[str, str],
        supervisor_tokens: dict[str, str],
        allowed_origins: set[str],
        window_s: float = 30.0,
        watchers_allowed: bool = True,
        service_tokens: dict[str, str] | None = None,
    ) -> None:
        self.staff_tokens = staff_tokens
        self.service_tokens = service_tokens or {}
        self.supervisor_tokens = supervisor_tokens
        self.allowed_origins = allowed_origins
        self.window_s = window_s
        self.watchers_allowed = watchers_allowed
        self.nonces = NonceCache(2 * window_s)
        self._verify_keys: dict[str, VerifyKey] = {}

    def authenticate(
        self, path: str, headers: dict[str, str], ip: str, state: EngineState
    ) -> Principal:
        origin = headers.get("origin")
        if origin is not None and origin not in self.allowed_origins:
            raise AuthError(403, f"origin {origin} not allowed")
        query = {k: v[-1] for k, v in parse_qs(urlsplit(path).query).items()}
        fingerprint = _fingerprint(headers, query)
        session = query.get("session") or headers.get("x-pubex-session", "")
        if session and _SESSION(session) is None:
            raise AuthError(400, "session must be 1-64 of A-Z a-z 0-9 . _ -")
        key_id = query.get("key") or headers.get("x-pubex-key")
        if key_id:
            return self._bidder(key_id, query, headers, state, ip, fingerprint, session)
        token = query.get("token") or _cookie(headers.get("cookie", ""), "pubex_token")
        if token:
            if token in self.staff_tokens:
                return Principal(STAFF, self.staff_tokens[token], "", ip, fingerprint, session)
            if token in self.supervisor_tokens:
                ident = self.supervisor_tokens[token]
                return Principal(SUPERVISOR, ident, "", ip, fingerprint, session)
            if token in self.service_tokens:
                ident = self.service_tokens[token]
                return Principal(SERVICE, ident, "", ip, fingerprint, session)
            raise AuthError(401, "unknown token")
        if not self.watchers_allowed:
            raise AuthError(401, "credentials required")
        return Principal(WATCHER, "", "", ip, fingerprint, session)

    def _bidder(
        self,
        key_id: str,
        query: dict[str, str],
        headers: dict[str, str],
        state: EngineState,
        ip: str,
        fingerprint: str,
        session: str,
    ) -> Principal:
        def field(name: str) -> str:
            return query.get(name) or headers.get(f"x-pubex-{name}", "")

        ts, nonce, sig = field("ts"), field("nonce"), field("sig")
        record = state.keys.get(key_id)
        if record is None:
            raise AuthError(401, "unknown key")
        try:
            ts_ms = int(ts)
            signature = bytes.fromhex(sig)
        except ValueError:
            raise AuthError(401, "ts must be an integer (ms) and sig hex") from None
        now = time.time()
        if abs(now - ts_ms / 1000) > self.window_s:
            raise AuthError(401, "stale or future timestamp")
        if not 8 <= len(nonce) <= 64:
            raise AuthError(401, "nonce must be 8-64 characters")
        try:
            self._verify_key(key_id, record.public_key_hex).verify(
                auth_message(key_id, ts_ms, nonce), signature
            )
        except (BadSignatureError, ValueError):
            raise AuthError(401, "bad signature") from None
        if not self.nonces.add(f"{key_id}|{nonce}", now):
            raise AuthError(401, "nonce already used")
        return Principal(BIDDER, key_id, record.bidder_id, ip, fingerprint, session)

    def _verify_key(self, key_id: str, public_key_hex: str) -> VerifyKey:
        vk = self._verify_keys.get(key_id)
        if vk is None:
            vk = self._verify_keys[key_id] = VerifyKey(bytes.fromhex(public_key_hex))
        return vk

    def verify_key(self, key_id: str, state: EngineState) -> VerifyKey | None:
        record = state.keys.get(key_id)
        return None if record is None else self._verify_key(key_id, record.public_key_hex)


def _cookie(header: str, name: str) -> str:
    for part in header.split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    return ""


def _fingerprint(headers: dict[str, str], query: dict[str, str]) -> str:
    device = query.get("device") or headers.get("x-pubex-device", "")
    agent = headers.get("user-agent", "")
    return hashlib.blake2b(f"{agent}|{device}".encode(), digest_size=8).hexdigest()
