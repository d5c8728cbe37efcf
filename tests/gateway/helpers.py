"""Small synchronisation helpers over ``gateway.tclient.Client``."""

from __future__ import annotations

import itertools

import trio

from gateway import protocol as p
from gateway.tclient import Client

_ping_t = itertools.count(1_000_000)


async def sync(client: Client, timeout: float = 10) -> None:
    """Round-trip a ping: every frame the server queued to ``client`` before it
    read the ping has been received once the matching pong arrives."""
    t = next(_ping_t)
    await client.send(p.Ping(t))
    with trio.fail_after(timeout):
        while not any(isinstance(f, p.Pong) and f.t == t for f in client.events):
            if client.closed:
                raise AssertionError("connection closed while waiting for pong")
            await client.changed.wait()


async def anonymous_error(client: Client, timeout: float = 10) -> p.Error:
    """The next error without a client_seq (frame-level refusals)."""
    n = len(client.anonymous_errors)
    await sync(client, timeout)
    assert len(client.anonymous_errors) == n + 1, client.anonymous_errors[n:]
    return client.anonymous_errors[-1]


async def send_and_error(client: Client, text: str | bytes) -> p.Error:
    """Send a frame the gateway refuses; its error (with or without client_seq)."""
    n = len(client.anonymous_errors)
    before = dict(client.replies)
    if isinstance(text, bytes):
        await client.sock._raw.send_message(text)
    else:
        await client.send_text(text)
    await sync(client)
    new = client.anonymous_errors[n:] + [
        r for cs, r in client.replies.items() if before.get(cs) is not r
    ]
    assert len(new) == 1, new
    assert isinstance(new[0], p.Error), new
    return new[0]


def events_of(client: Client, kind: str) -> list[dict]:
    return [
        f.event for f in client.events if isinstance(f, p.EventFrame) and f.event["type"] == kind
    ]
