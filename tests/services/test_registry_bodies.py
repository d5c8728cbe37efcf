"""Registry request bodies are read like WebSocket frames (issue 11): duplicate
keys, deep nesting, out-of-range integers, over-long and look-alike ids are
refused with a typed 400 before anything is stored or sent -- driven through
the real Starlette app over ASGI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.wire.access import Access, TokenBook
from persistence.service import ServiceStore
from services.registry.service import Registry, build_app
from tests import tokens

GOOD_KEY = {"key": "k1", "bidder": "b1", "public_key_hex": "ab" * 32}
GOOD_DEPOSIT = {"lot": "L1", "bidder": "b1", "amount_fen": 100}
GOOD_EXPERT = {"expert_id": "e1", "name": "Wang", "specialties": ["civil"], "region": "JS"}


async def post(app: Any, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {tokens.STAFF}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "root_path": "",
        "scheme": "http",
        "server": ("127.0.0.1", 8094),
        "http_version": "1.1",
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    raw = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, msgspec.json.decode(raw) if raw else {}


def hostile(good: dict[str, Any], money: str | None = None) -> list[tuple[str, bytes, str]]:
    """(what, body, expected code) for one good body."""
    text = json.dumps(good)
    first = next(iter(good))
    cases = [
        (
            "duplicate key",
            text[:-1] + f', "{first}": {json.dumps(good[first])}}}',
            "payload_ambiguous",
        ),
        ("deep nesting", text[:-1] + ', "x": ' + "[" * 20 + "]" * 20 + "}", "nesting_too_deep"),
        ("not JSON", b"{".decode() + text, "malformed_json"),
        ("65-char id", json.dumps({**good, first: "a" * 65}), "schema_violation"),
        ("look-alike id", json.dumps({**good, first: "k\u200b1"}), "schema_violation"),
        ("unknown field", json.dumps({**good, "zz": 1}), "schema_violation"),
    ]
    if money:
        cases += [
            ("2^64 fen", json.dumps({**good, money: 2**64}), "schema_violation"),
            ("over max_amount_fen", json.dumps({**good, money: 10**15 + 1}), "schema_violation"),
            ("negative fen", json.dumps({**good, money: -1}), "schema_violation"),
        ]
    return [
        (what, body.encode() if isinstance(body, str) else body, code) for what, body, code in cases
    ]


@pytest.mark.parametrize(
    ("path", "good", "money"),
    [
        ("/api/keys", GOOD_KEY, None),
        ("/api/deposits", GOOD_DEPOSIT, "amount_fen"),
        ("/api/experts", GOOD_EXPERT, None),
    ],
)
async def test_hostile_bodies_are_refused_typed(tmp_path: Path, path, good, money) -> None:
    store = ServiceStore.open(tmp_path / "registry")
    try:
        book = TokenBook(staff={tokens.STAFF: tokens.STAFF_ID})
        app = build_app(Registry(store, None), Access(book))
        for what, body, code in hostile(good, money):
            status, reply = await post(app, path, body)
            assert (status, reply.get("code")) == (400, code), (what, status, reply)
        status, reply = await post(app, path, json.dumps(good).encode())
        assert status != 400, reply  # read; then written (or 503 without a writer)
    finally:
        store.close()
