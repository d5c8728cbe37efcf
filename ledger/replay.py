"""Theory of operation: recovery and replay.

The ledger is the truth: engine state is what applying its commands, in
order, at their recorded times, produces.  ``recover`` restores the latest
snapshot, checks it against the state hash stored with it, then replays the
tail.  ``replay`` re-applies entries and, by default, checks that every entry
re-produces byte for byte the events it recorded -- a divergence means the
engine is not deterministic or the ledger was altered, and is reported with
its sequence number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import msgspec

from engine.messages import AnyCommand, Event, decode_command, encode_events
from engine.router import Router
from engine.state import STATE_VERSION
from ledger.record import HEADER_SIZE, EntryBody, decode_body
from ledger.snapshot import decode_snapshot
from ledger.store import LedgerStore

OnEntry = Callable[[EntryBody, AnyCommand, list[Event]], None]


class EntrySource(Protocol):
    """What replay reads: a LedgerStore, or an export's reader."""

    def iter_entries(
        self, from_seq: int = 1, until_seq: int | None = None
    ) -> Iterator[tuple[int, bytes, bytes, bytes]]: ...


class ReplayDivergence(RuntimeError):
    def __init__(self, seq: int, why: str) -> None:
        super().__init__(f"replay diverged at seq {seq}: {why}")
        self.seq = seq
        self.why = why


def replay(
    router: Router,
    store: EntrySource,
    *,
    from_seq: int = 1,
    until_seq: int | None = None,
    check_events: bool = True,
    on_entry: OnEntry | None = None,
) -> Router:
    for seq, _prev, _hash, raw in store.iter_entries(from_seq, until_seq):
        _apply_entry(router, seq, raw, check_events, on_entry)
    return router


def _apply_entry(
    router: Router, seq: int, raw: bytes, check_events: bool, on_entry: OnEntry | None
) -> None:
    body = decode_body(raw)
    if body.seq != seq or router.applied != seq - 1:
        raise ReplayDivergence(seq, "sequence out of order")
    try:
        cmd = decode_command(body.command)
    except (
        msgspec.DecodeError,
        UnicodeDecodeError,
    ) as e:  # a forged entry (or a non-UTF-8 str): refuse
        raise ReplayDivergence(seq, f"undecodable command: {e}") from e
    events = router.apply(cmd, body.ts_ns)
    if check_events and encode_events(events) != body.events:
        raise ReplayDivergence(seq, "events differ from the recorded ones")
    if on_entry is not None:
        on_entry(body, cmd, events)


def rebuild(store: LedgerStore, pending: Iterable[tuple[int, bytes]]) -> Router:
    """The engine as of the last of ``pending``: the store's ledger (snapshot
    + tail), then the entries not yet durable -- still in memory, as packed
    values -- re-applied and checked like any replay.  Used when a command
    raised inside ``Router.apply`` and may have left the engine half-changed:
    the command is refused alone and everything else stands."""
    router = recover(store)
    for seq, value in pending:
        if seq > router.applied:
            _apply_entry(router, seq, value[HEADER_SIZE:], True, None)
    return router


def restore_snapshot(store: LedgerStore, at_or_before: int | None = None) -> Router:
    """The latest snapshot (at or before a seq), checked against its stored hash.

    A snapshot of another state version (written by an engine whose state had
    another layout) is not loaded: the engine starts from genesis and the caller
    replays the whole ledger, which gives the state this engine keeps."""
    found = (
        store.latest_snapshot()
        if at_or_before is None
        else (store.snapshot_at_or_before(at_or_before))
    )
    if found is None:
        return Router()
    seq, data = found
    rec = decode_snapshot(data)
    if rec.version != STATE_VERSION:
        return Router()
    router = Router.restore(rec.state)
    if rec.seq != seq or router.applied != seq or router.state_hash() != rec.state_hash:
        raise ReplayDivergence(seq, "snapshot does not match its state hash")
    return router


def recover(store: LedgerStore) -> Router:
    """Start-up: latest snapshot + replay of the tail."""
    router = restore_snapshot(store)
    return replay(router, store, from_seq=router.applied + 1)


def full_replay(store: LedgerStore, *, on_entry: OnEntry | None = None) -> Router:
    """Genesis to the last entry, ignoring snapshots."""
    return replay(Router(), store, on_entry=on_entry)
