"""Exports: round trip, and a strict parser that refuses every mutation without crashing."""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.audit import timelines, verify_ledger
from ledger.export import MAGIC, ExportError, ExportReader, is_export, write_export
from ledger.store import LedgerStore
from tests.ledger.conftest import signed_ledger

MUTATIONS = int(os.environ.get("PUBEX_EXPORT_FUZZ", "10000"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data dir, its export): 84 entries, 8 signed checkpoints."""
    base = tmp_path_factory.mktemp("export")
    data = signed_ledger(base / "data")
    out = base / "ledger.export"
    with LedgerStore.open(data / "ledger", readonly=True) as store:
        pub = bytes.fromhex((data / "server.pub").read_text())
        write_export(store, out, server_pub=pub, created_ns=1)
    return data, out


def test_round_trip_verifies_and_replays_like_the_ledger(exported: tuple[Path, Path]) -> None:
    data, out = exported
    assert is_export(out) and not is_export(data)
    summary = ExportReader(out).validate()
    assert (summary.entries, summary.checkpoints) == (84, 8)
    from_ledger, from_export = verify_ledger(data), verify_ledger(out)
    assert from_ledger.ok and from_export.ok, from_export
    assert from_export.state_hash == from_ledger.state_hash
    assert from_export.checkpoints_checked == 8
    keep = lambda ev: True  # noqa: E731
    assert timelines(out, keep)[1] == timelines(data, keep)[1]


def test_export_refuses_an_existing_file(exported: tuple[Path, Path]) -> None:
    data, out = exported
    with LedgerStore.open(data / "ledger", readonly=True) as store, pytest.raises(FileExistsError):
        write_export(store, out)


def test_a_different_expected_key_is_refused(exported: tuple[Path, Path]) -> None:
    with pytest.raises(ExportError, match="different server key"):
        ExportReader(exported[1], expected_key=bytes(32)).validate()


def _records(data: bytes) -> list[tuple[int, int]]:
    """(offset, total length) of every record after the magic."""
    out, at = [], len(MAGIC)
    while at < len(data):
        _, n = struct.unpack(">cI", data[at : at + 5])
        out.append((at, 5 + n))
        at += 5 + n
    return out


def _mutate(rng: random.Random, data: bytes) -> tuple[bytes, str, int | None]:
    """One random mutation; returns (mutated, kind, flipped position or None)."""
    recs = _records(data)
    kind = rng.choice(["flip", "byte", "truncate", "delete", "insert", "dup", "swap", "length"])
    n = len(data)
    if kind == "flip":
        p = rng.randrange(n)
        return data[:p] + bytes([data[p] ^ (1 << rng.randrange(8))]) + data[p + 1 :], kind, p
    if kind == "byte":
        p = rng.randrange(n)
        b = rng.choice([b for b in range(256) if b != data[p]])
        return data[:p] + bytes([b]) + data[p + 1 :], kind, p
    if kind == "truncate":
        return data[: rng.randrange(n)], kind, None
    if kind == "delete":
        p = rng.randrange(n)
        return data[:p] + data[p + rng.randint(1, 64) :], kind, None
    if kind == "insert":
        p = rng.randrange(n + 1)
        return data[:p] + rng.randbytes(rng.randint(1, 64)) + data[p:], kind, None
    if kind == "dup":
        at, ln = rng.choice(recs)
        return data[: at + ln] + data[at : at + ln] + data[at + ln :], kind, None
    if kind == "swap":
        (a, la), (b, lb) = sorted(rng.sample(recs, 2))
        return (
            data[:a] + data[b : b + lb] + data[a + la : b] + data[a : a + la] + data[b + lb :],
            kind,
            None,
        )
    at, ln = rng.choice(recs)  # "length": a record header that lies
    new = rng.choice([0, 1, ln - 6, ln - 4, rng.randrange(1 << 32)])
    if new == ln - 5:
        new += 1
    return data[: at + 1] + struct.pack(">I", new) + data[at + 5 :], kind, None


@pytest.fixture(scope="module")
def small_export(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """24 entries and 2 signed checkpoints: small, so 10,000 parses stay quick."""
    base = tmp_path_factory.mktemp("small")
    data = signed_ledger(base / "data", bids=20, checkpoint_every=10)
    with LedgerStore.open(data / "ledger", readonly=True) as store:
        pub = bytes.fromhex((data / "server.pub").read_text())
        write_export(store, base / "x.export", server_pub=pub, created_ns=1)
    return (base / "x.export").read_bytes()


def test_mutated_exports_are_all_refused_and_never_crash(small_export: bytes) -> None:
    """T18: >= 10,000 mutations; each one an ExportError naming a byte inside the
    file (at or before a flipped entry byte), never another exception."""
    data = small_export
    entries_start = _records(data)[3][0]  # header + 2 checkpoints precede the entries
    seed = int(os.environ.get("PUBEX_SEED", "18"))
    rng = random.Random(seed)
    tried = 0
    for _ in range(MUTATIONS):
        mutated, kind, pos = _mutate(rng, data)
        if mutated == data:
            continue
        tried += 1
        try:
            ExportReader(mutated).validate()
        except ExportError as e:
            assert 0 <= e.offset <= len(mutated), (seed, kind, e)
            if pos is not None and pos >= entries_start:
                assert e.offset <= pos, (seed, kind, pos, e)
        else:
            raise AssertionError(f"seed {seed}: a {kind} mutation was accepted")
    assert tried >= MUTATIONS * 0.99
    print(f"\nT18 export fuzz: {tried} mutated exports, accepted 0, crashes 0 (seed {seed})")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_after_the_magic_are_refused(tail: bytes) -> None:
    with pytest.raises(ExportError):
        ExportReader(MAGIC + tail).validate()


def test_a_chained_forgery_with_garbage_commands_is_refused_not_crashed(tmp_path: Path) -> None:
    """A forger re-chains entries whose command bytes are junk: the file parses
    (the chain holds), but verification reports the entry instead of crashing."""
    from ledger.record import EntryBody, encode_body, make_entry
    from ledger.store import Batch

    with LedgerStore.open(tmp_path / "forged") as store:
        prev = store.last_hash()
        batch = Batch()
        for seq in (1, 2):
            prev, value = make_entry(prev, encode_body(EntryBody(seq, seq, b"\xc1junk", b"")))
            batch.entries.append((seq, value))
        store.commit_batch(batch)
        write_export(store, tmp_path / "forged.export")
    result = verify_ledger(tmp_path / "forged.export")
    assert not result.ok and result.first_bad_seq == 1 and "undecodable" in result.reason
