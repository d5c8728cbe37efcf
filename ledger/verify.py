"""Ledger verification: the hash chain and the signed checkpoints.

The chain alone catches edits, deletions and reorderings inside the log.  It
cannot catch a truncated tail or an insider who rewrites and re-chains
everything; signed checkpoints (published through disclosure) catch a rewrite
behind the last checkpoint, and signed receipts held by bidders close the tail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
from nacl.signing import VerifyKey

from ledger.checkpoint import BadCheckpoint, verify_checkpoint
from ledger.record import (
    GENESIS,
    HEADER_SIZE,
    EntryBody,
    chain_hash,
    decode_body,
    key_seq,
    seq_key,
)
from ledger.store import LedgerStore


class ChainReport(msgspec.Struct, frozen=True):
    """Result of :func:`verify_chain`; count/last_* describe the verified prefix."""

    count: int
    last_seq: int
    last_hash: bytes
    ok: bool
    first_bad_seq: int | None
    # "" | gap | prev_mismatch | hash_mismatch | seq_mismatch | undecodable
    # | point_missing | point_mismatch (``since``: the verified point is gone or changed)
    reason: str


class CheckpointCheck(msgspec.Struct, frozen=True):
    """Result for one stored checkpoint; ``reason`` is "" when ok."""

    seq: int
    ok: bool
    reason: str  # "" | bad_signature | seq_mismatch | beyond_tail | hash_mismatch


@contextmanager
def _as_store(store_or_path: LedgerStore | str | Path) -> Iterator[LedgerStore]:
    """Use a given store as is, or open a path read-only for the duration."""
    if isinstance(store_or_path, LedgerStore):
        yield store_or_path
        return
    with LedgerStore.open(store_or_path, readonly=True) as store:
        yield store


def check_entry(expected: int, prev_h: bytes, k: bytes, v: bytes) -> tuple[str, EntryBody | None]:
    """("", body) when the entry at key ``k`` extends the chain after ``prev_h``
    as entry ``expected``; else (reason, None)."""
    if len(k) != 8 or len(v) < HEADER_SIZE:
        return "undecodable", None
    if key_seq(k) != expected:
        return "gap", None
    prev, h, body = v[:32], v[32:HEADER_SIZE], v[HEADER_SIZE:]
    if prev != prev_h:
        return "prev_mismatch", None
    if chain_hash(prev, body) != h:
        return "hash_mismatch", None
    try:
        decoded = decode_body(body)
    except (
        msgspec.DecodeError,
        UnicodeDecodeError,
    ):  # (msgspec: a str not UTF-8)
        return "undecodable", None
    # The key is outside the hash; the body's own seq binds position to content.
    return ("", decoded) if decoded.seq == expected else ("seq_mismatch", None)


def verify_chain(
    store_or_path: LedgerStore | str | Path,
    *,
    since: tuple[int, bytes] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ChainReport:
    """Walk the ledger once (streaming) and report the first break.

    ``since`` = (seq, entry hash) of a point verified before (start-up keeps
    one in the ledger's meta): the walk starts there, after checking that the
    entry at that seq is still whole and still has that hash.  ``progress`` is
    called with each entry's seq once it checked out."""
    count, last_seq, last_h = 0, 0, GENESIS
    with _as_store(store_or_path) as store:
        if since is not None and since[0] > 0:
            seq, recorded = since
            try:
                found = store.get(seq)
            except ValueError:  # shorter than an entry header
                return ChainReport(0, 0, GENESIS, False, seq, "undecodable")
            if found is None:
                return ChainReport(0, 0, GENESIS, False, seq, "point_missing")
            prev, h, body = found
            reason, _ = check_entry(seq, prev, seq_key(seq), prev + h + body)
            if reason:  # (its prev link was checked by the walk that recorded the point)
                return ChainReport(0, 0, GENESIS, False, seq, reason)
            if h != recorded:
                return ChainReport(0, 0, GENESIS, False, seq, "point_mismatch")
            last_seq, last_h = seq, h
        raw = store.iter_raw(last_seq + 1)
        try:
            for k, v in raw:
                reason, _ = check_entry(last_seq + 1, last_h, k, v)
                if reason:
                    return ChainReport(count, last_seq, last_h, False, last_seq + 1, reason)
                count, last_seq, last_h = count + 1, last_seq + 1, v[32:HEADER_SIZE]
                if progress is not None:
                    progress(last_seq)
        finally:
            raw.close()
    return ChainReport(count, last_seq, last_h, True, None, "")


def _check_checkpoint(store: LedgerStore, key: VerifyKey, seq: int, blob: bytes) -> CheckpointCheck:
    try:
        cp = verify_checkpoint(key, blob)
    except BadCheckpoint:
        return CheckpointCheck(seq, False, "bad_signature")
    if cp.seq != seq:
        return CheckpointCheck(seq, False, "seq_mismatch")
    entry = store.get(seq)
    if entry is None:
        return CheckpointCheck(seq, False, "beyond_tail")  # truncated (or deleted)
    if entry[1] != cp.entry_hash:
        return CheckpointCheck(seq, False, "hash_mismatch")  # rewritten behind it
    return CheckpointCheck(seq, True, "")


def verify_checkpoints(
    store_or_path: LedgerStore | str | Path, public_key: VerifyKey | bytes, *, after: int = 0
) -> list[CheckpointCheck]:
    """Check every stored checkpoint (with seq > ``after``): its signature, and
    that it matches the entry hash.

    Note: this only proves consistency with checkpoints stored in the ledger
    itself; an insider can delete those, so the strong check compares against
    checkpoints published outside (disclosure) with the same helper.
    """
    key = public_key if isinstance(public_key, VerifyKey) else VerifyKey(public_key)
    with _as_store(store_or_path) as store:
        return [_check_checkpoint(store, key, s, b) for s, b in store.checkpoints_after(after)]
