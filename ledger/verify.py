"""Ledger verification: the hash chain and the signed checkpoints.

The chain alone catches edits, deletions and reorderings inside the log.  It
cannot catch a truncated tail or an insider who rewrites and re-chains
everything; signed checkpoints (published through disclosure) catch a rewrite
behind the last checkpoint, and signed receipts held by bidders close the tail.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
from nacl.signing import VerifyKey

from ledger.checkpoint import BadCheckpoint, verify_checkpoint
from ledger.record import GENESIS, HEADER_SIZE, EntryBody, chain_hash, decode_body, key_seq
from ledger.store import LedgerStore


class ChainReport(msgspec.Struct, frozen=True):
    """Result of :func:`verify_chain`; count/last_* describe the verified prefix."""

    count: int
    last_seq: int
    last_hash: bytes
    ok: bool
    first_bad_seq: int | None
    reason: str  # "" | gap | prev_mismatch | hash_mismatch | seq_mismatch | undecodable


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
    except msgspec.DecodeError:
        return "undecodable", None
    # The key is outside the hash; the body's own seq binds position to content.
    return ("", decoded) if decoded.seq == expected else ("seq_mismatch", None)


def verify_chain(store_or_path: LedgerStore | str | Path) -> ChainReport:
    """Walk the whole ledger once (streaming) and report the first break."""
    count, last_seq, last_h = 0, 0, GENESIS
    with _as_store(store_or_path) as store:
        for k, v in store.iter_raw():
            reason, _ = check_entry(last_seq + 1, last_h, k, v)
            if reason:
                return ChainReport(count, last_seq, last_h, False, last_seq + 1, reason)
            count, last_seq, last_h = count + 1, last_seq + 1, v[32:HEADER_SIZE]
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
    store_or_path: LedgerStore | str | Path, public_key: VerifyKey | bytes
) -> list[CheckpointCheck]:
    """Check every stored checkpoint's signature and that it matches the entry hash.

    Note: this only proves consistency with checkpoints stored in the ledger
    itself; an insider can delete those, so the strong check compares against
    checkpoints published outside (disclosure) with the same helper.
    """
    key = public_key if isinstance(public_key, VerifyKey) else VerifyKey(public_key)
    with _as_store(store_or_path) as store:
        return [_check_checkpoint(store, key, s, b) for s, b in store.checkpoints()]
