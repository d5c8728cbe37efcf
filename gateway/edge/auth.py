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
* Staff and supervisors: a token from the config, as ``Authorization: Bearer
  TOKEN`` (terminals, scripts) or the console's ``pubex_token`` cookie (set by
  ``POST /login``); never in the URL.  Compared in constant time
  (``gateway.wire.access.TokenBook``).
* Services (the registry): a token from ``service_tokens``; the connection's
  role is ``service`` and its commands' origin ``service:<id>``.
* Every failure is the same 401 body (``authentication failed``: an unknown key
  and a bad signature look alike).  A wrong token slows its client address down
  (``gateway.wire.access.FailureGate``; 429 while the back-off lasts); a bidder's
  failures do not (an Ed25519 signature cannot be guessed, and one bidder with
  a skewed clock must not lock out the others behind its NAT).
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
from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit

import msgspec
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from engine.messages import SESSION_PATTERN
from engine.state import KeyRecord
from gateway.wire.access import AUTH_FAILED, TokenBook
from gateway.wire.protocol import auth_message

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


class Claim(msgspec.Struct, frozen=True):
    """What the edge could not decide alone, for the sequencer's admission
    (``gateway.link.front.Front.admit``): a token handshake's lookup (None:
    not a token handshake) and a bidder handshake's ``key|nonce``."""

    token_ok: bool | None = None
    nonce: str = ""


class AuthError(Exception):
    """A refused handshake: ``reason`` is what the client sees, ``detail`` what
    the log says (the client never learns which check failed)."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.detail = detail or reason


def _failed(detail: str) -> AuthError:
    return AuthError(401, AUTH_FAILED["error"], detail)


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
        self.book = TokenBook(
            staff=staff_tokens, supervisor=supervisor_tokens, service=service_tokens
        )
        self.allowed_origins = allowed_origins
        self.window_s = window_s
        self.watchers_allowed = watchers_allowed
        self._verify_keys: dict[str, VerifyKey] = {}

    def authenticate(
        self, path: str, headers: dict[str, str], ip: str, keys: Mapping[str, KeyRecord]
    ) -> tuple[Principal, Claim]:
        """Everything the edge checks alone (Origin, form, a bidder's signature
        over its handshake, a token's lookup); the ``Claim`` goes to the
        sequencer, which keeps the nonce memory and the failed-token back-off
        for every edge at once."""
        origin = headers.get("origin")
        if origin is not None and origin not in self.allowed_origins:
            raise AuthError(403, f"origin {origin} not allowed")
        query = {k: v[-1] for k, v in parse_qs(urlsplit(path).query).items()}
        fingerprint = _fingerprint(headers, query)
        session = query.get("session") or headers.get("x-pubex-session", "")
        if session and _SESSION(session) is None:
            raise AuthError(400, "session must be 1-64 of A-Z a-z 0-9 . _ -")
        key_id = query.get("key") or headers.get("x-pubex-key")
        token = _bearer(headers.get("authorization", "")) or _cookie(
            headers.get("cookie", ""), "pubex_token"
        )
        if key_id:
            # Not slowed down: a signature cannot be guessed, and a bidder with a bad
            # clock must not lock out the others behind the same address.  No client
            # session either: a bidder's client_seq is inside its signed payload, one
            # numbering per key -- the same signed bid sent in two sessions must not
            # count twice.  A session a bidder's client names is ignored.
            return self._bidder(key_id, query, headers, keys, ip, fingerprint)
        if token:
            found = self.book.lookup(token)
            if found is None or found[0] not in (STAFF, SUPERVISOR, SERVICE):
                return Principal(WATCHER, "", "", ip, fingerprint, session), Claim(False)
            return Principal(found[0], found[1], "", ip, fingerprint, session), Claim(True)
        if "token" in query:
            raise _failed("a token in the URL (send Authorization: Bearer or the cookie)")
        if not self.watchers_allowed:
            raise _failed("credentials required")
        return Principal(WATCHER, "", "", ip, fingerprint, session), Claim()

    def _bidder(
        self,
        key_id: str,
        query: dict[str, str],
        headers: dict[str, str],
        keys: Mapping[str, KeyRecord],
        ip: str,
        fingerprint: str,
    ) -> tuple[Principal, Claim]:
        def field(name: str) -> str:
            return query.get(name) or headers.get(f"x-pubex-{name}", "")

        ts, nonce, sig = field("ts"), field("nonce"), field("sig")
        record = keys.get(key_id)
        if record is None:
            raise _failed("unknown key")
        try:
            ts_ms = int(ts)
            signature = bytes.fromhex(sig)
        except ValueError:
            raise _failed("ts must be an integer (ms) and sig hex") from None
        now = time.time()
        if abs(now - ts_ms / 1000) > self.window_s:
            raise _failed("stale or future timestamp")
        if not 8 <= len(nonce) <= 64:
            raise _failed("nonce must be 8-64 characters")
        try:
            self._verify_key(key_id, record.public_key_hex).verify(
                auth_message(key_id, ts_ms, nonce), signature
            )
        except (BadSignatureError, ValueError):
            raise _failed("bad signature") from None
        return Principal(BIDDER, key_id, record.bidder_id, ip, fingerprint), Claim(
            nonce=f"{key_id}|{nonce}"
        )

    def _verify_key(self, key_id: str, public_key_hex: str) -> VerifyKey:
        vk = self._verify_keys.get(key_id)
        if vk is None:
            vk = self._verify_keys[key_id] = VerifyKey(bytes.fromhex(public_key_hex))
        return vk

    def verify_key(self, key_id: str, keys: Mapping[str, KeyRecord]) -> VerifyKey | None:
        record = keys.get(key_id)
        return None if record is None else self._verify_key(key_id, record.public_key_hex)


def _bearer(header: str) -> str:
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


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
