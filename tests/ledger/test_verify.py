"""verify_chain / verify_checkpoints against tampered real LMDB files (T7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.checkpoint import Checkpoint, load_or_create_signing_key, sign_checkpoint
from ledger.record import GENESIS, EntryBody, decode_body, encode_body, make_entry, seq_key
from ledger.store import Batch, LedgerStore
from ledger.verify import verify_chain, verify_checkpoints
from tests.ledger.conftest import raw_env, write_chain

N = 50


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    """A closed ledger of N valid entries, with a signed checkpoint at seq 40."""
    path = tmp_path / "ledger"
    key = load_or_create_signing_key(tmp_path / "keys")
    with LedgerStore.open(path) as s:
        write_chain(s, N, per_batch=7)
        entry = s.get(40)
        assert entry is not None
        blob = sign_checkpoint(key, Checkpoint(seq=40, entry_hash=entry[1], ts_ns=1))
        s.commit_batch(Batch(checkpoints=[(40, blob)]))
    return path


def _pub(ledger: Path) -> bytes:
    return bytes(load_or_create_signing_key(ledger.parent / "keys").verify_key)


def _rewrite(path: Path, edit: dict[int, bytes | None]) -> None:
    """The tamperer: rewrite (or delete, for None) raw values of the entries db."""
    env, db = raw_env(path)
    with env.begin(write=True) as txn:
        for seq, value in edit.items():
            if value is None:
                assert txn.delete(seq_key(seq), db=db)
            else:
                txn.put(seq_key(seq), value, db=db)
    env.close()


def _raw(path: Path, seq: int) -> bytes:
    env, db = raw_env(path)
    with env.begin() as txn:
        v = txn.get(seq_key(seq), db=db)
    env.close()
    assert v is not None
    return bytes(v)


def test_clean_chain_verifies(ledger: Path) -> None:
    report = verify_chain(ledger)
    assert (report.ok, report.count, report.last_seq, report.first_bad_seq) == (True, N, N, None)
    assert report.reason == ""
    assert all(c.ok for c in verify_checkpoints(ledger, _pub(ledger)))


def test_empty_chain_verifies(tmp_path: Path) -> None:
    with LedgerStore.open(tmp_path / "l") as s:
        report = verify_chain(s)
    assert report.ok and report.count == 0 and report.last_hash == GENESIS


@pytest.mark.parametrize("seq", [1, 17, N])
@pytest.mark.parametrize("offset", [70, 100, -1])
def test_body_byte_flip(ledger: Path, seq: int, offset: int) -> None:
    v = bytearray(_raw(ledger, seq))
    v[offset] ^= 0x01
    _rewrite(ledger, {seq: bytes(v)})
    report = verify_chain(ledger)
    assert (report.ok, report.first_bad_seq, report.reason) == (False, seq, "hash_mismatch")
    assert report.count == seq - 1


def test_stored_hash_flip(ledger: Path) -> None:
    v = bytearray(_raw(ledger, 20))
    v[40] ^= 0x80
    _rewrite(ledger, {20: bytes(v)})
    report = verify_chain(ledger)
    assert (report.first_bad_seq, report.reason) == (20, "hash_mismatch")


def test_prev_flip(ledger: Path) -> None:
    v = bytearray(_raw(ledger, 20))
    v[3] ^= 0x80
    _rewrite(ledger, {20: bytes(v)})
    report = verify_chain(ledger)
    assert (report.first_bad_seq, report.reason) == (20, "prev_mismatch")


@pytest.mark.parametrize("seq", [1, 25, N - 1])
def test_delete_is_a_gap(ledger: Path, seq: int) -> None:
    _rewrite(ledger, {seq: None})
    report = verify_chain(ledger)
    assert (report.ok, report.first_bad_seq, report.reason) == (False, seq, "gap")


@pytest.mark.parametrize(("a", "b"), [(10, 11), (3, 30), (1, N)])
def test_swap_detected_at_lower_seq(ledger: Path, a: int, b: int) -> None:
    _rewrite(ledger, {a: _raw(ledger, b), b: _raw(ledger, a)})
    report = verify_chain(ledger)
    assert (report.ok, report.first_bad_seq) == (False, a)
    assert report.reason == "prev_mismatch"


def _rechain(path: Path, bodies: dict[int, bytes]) -> None:
    """Full insider rewrite: replace bodies, then recompute every later hash."""
    with LedgerStore.open(path) as s:
        originals = {seq: body for seq, _p, _h, body in s.iter_entries()}
    originals.update(bodies)
    prev, values = GENESIS, {}
    for seq in sorted(originals):
        prev, values[seq] = make_entry(prev, originals[seq])
    _rewrite(path, values)


def test_rechain_passes_chain_but_not_checkpoint(ledger: Path) -> None:
    with LedgerStore.open(ledger, readonly=True) as s:
        entry = s.get(12)
    assert entry is not None
    old = decode_body(entry[2])
    forged = EntryBody(old.seq, old.ts_ns, b"forged command", old.events, old.meta)
    _rechain(ledger, {12: encode_body(forged)})
    assert verify_chain(ledger).ok  # the chain alone cannot see a full re-chain
    checks = verify_checkpoints(ledger, _pub(ledger))
    assert [(c.seq, c.ok, c.reason) for c in checks] == [(40, False, "hash_mismatch")]


def test_truncated_tail_detected_by_checkpoint(ledger: Path) -> None:
    _rewrite(ledger, {seq: None for seq in range(35, N + 1)})
    assert verify_chain(ledger).ok  # a truncated chain is still a valid prefix
    checks = verify_checkpoints(ledger, _pub(ledger))
    assert [(c.ok, c.reason) for c in checks] == [(False, "beyond_tail")]


def test_swap_then_rechain_is_seq_mismatch(ledger: Path) -> None:
    with LedgerStore.open(ledger, readonly=True) as s:
        bodies = {seq: body for seq, _p, _h, body in s.iter_entries()}
    _rechain(ledger, {5: bodies[6], 6: bodies[5]})
    report = verify_chain(ledger)
    assert (report.first_bad_seq, report.reason) == (5, "seq_mismatch")


def test_undecodable_body(ledger: Path) -> None:
    _rechain(ledger, {7: b"\xc1 not msgpack"})
    report = verify_chain(ledger)
    assert (report.first_bad_seq, report.reason) == (7, "undecodable")


def test_short_value_is_undecodable(ledger: Path) -> None:
    _rewrite(ledger, {9: b"short"})
    report = verify_chain(ledger)
    assert (report.first_bad_seq, report.reason) == (9, "undecodable")


def test_forged_checkpoint_signature(ledger: Path) -> None:
    other = load_or_create_signing_key(ledger.parent / "other")
    with LedgerStore.open(ledger) as s:
        entry = s.get(45)
        assert entry is not None
        blob = sign_checkpoint(other, Checkpoint(seq=45, entry_hash=entry[1], ts_ns=2))
        s.commit_batch(Batch(checkpoints=[(45, blob)]))
        checks = verify_checkpoints(s, _pub(ledger))
    assert [(c.seq, c.ok, c.reason) for c in checks] == [
        (40, True, ""),
        (45, False, "bad_signature"),
    ]


def test_checkpoint_stored_under_wrong_seq(ledger: Path) -> None:
    key = load_or_create_signing_key(ledger.parent / "keys")
    with LedgerStore.open(ledger) as s:
        entry = s.get(40)
        assert entry is not None
        blob = sign_checkpoint(key, Checkpoint(seq=40, entry_hash=entry[1], ts_ns=1))
        s.commit_batch(Batch(checkpoints=[(41, blob)]))
        checks = verify_checkpoints(s, key.verify_key)
    assert [(c.seq, c.reason) for c in checks] == [(40, ""), (41, "seq_mismatch")]
