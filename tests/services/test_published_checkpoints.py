"""Published checkpoints (T7 against disclosure): truncation, a rewrite behind a
checkpoint, and a full re-chain under another key are each detected -- in a
ledger directory and in an export, through the library and the command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import lmdb
import pytest
from nacl.signing import SigningKey

from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.export import ExportReader, write_export
from ledger.published import check_against, parse_feed
from ledger.record import EntryBody, chain_entry, decode_body, encode_body, seq_key
from ledger.store import LedgerStore
from persistence.service import ServiceStore
from services.disclosure.checkpoints import CheckpointPublisher
from services.disclosure.service import checkpoint_page
from tests.ledger.conftest import signed_ledger


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data dir with 84 entries and 8 checkpoints, the feed disclosure published)."""
    base = tmp_path_factory.mktemp("published")
    data = signed_ledger(base / "data")
    pub = bytes.fromhex((data / "server.pub").read_text())
    with LedgerStore.open(data / "ledger", readonly=True) as ledger:
        store = ServiceStore.open(base / "disclosure")
        publisher = CheckpointPublisher(ledger, store, pub)
        assert publisher.publish(upto_seq=40) == 4  # only what the follower verified
        assert publisher.publish(upto_seq=ledger.last_seq()) == 4
        assert publisher.publish(upto_seq=ledger.last_seq()) == 0
        page = checkpoint_page(publisher, 0, 1000)
        assert [c["seq"] for c in checkpoint_page(publisher, 30, 2)["checkpoints"]] == [40, 50]
        store.close()
    feed = base / "checkpoints.json"
    feed.write_text(json.dumps(page))
    return data, feed


def _forge(
    data: Path,
    out: Path,
    from_seq: int,
    truncate_after: int | None = None,
    new_key: SigningKey | None = None,
) -> Path:
    """A copy of ``data`` where an insider rewrote entry ``from_seq``'s connection
    facts (which replay does not check), re-chained everything after it, re-signed
    or dropped the stored checkpoints, and optionally cut the tail."""
    shutil.copytree(data, out)
    env = lmdb.open(str(out / "ledger"), max_dbs=8)
    entries, cps = env.open_db(b"entries"), env.open_db(b"checkpoints")
    with env.begin(write=True) as txn:
        last = max(int.from_bytes(k, "big") for k, _ in txn.cursor(db=entries))
        end = last if truncate_after is None else truncate_after
        prev = txn.get(seq_key(from_seq), db=entries)[:32]
        for seq in range(from_seq, last + 1):
            if seq > end:
                txn.delete(seq_key(seq), db=entries)
                continue
            body = decode_body(txn.get(seq_key(seq), db=entries)[64:])
            if seq == from_seq:
                body = EntryBody(body.seq, body.ts_ns, body.command, body.events, b"forged")
            h, value, _ = chain_entry(prev, encode_body(body))
            txn.put(seq_key(seq), value, db=entries)
            prev = h
        txn.drop(cps, delete=False)
        if new_key is not None:
            for seq in range(10, end + 1, 10):
                h = txn.get(seq_key(seq), db=entries)[32:64]
                blob = sign_checkpoint(new_key, Checkpoint(seq, h, 0))
                txn.put(seq_key(seq), blob, db=cps)
    env.close()
    if new_key is not None:
        (out / "server.pub").write_text(bytes(new_key.verify_key).hex() + "\n")
    return out


TAMPER: dict[str, tuple[Callable[[Path, Path], Path], int, str]] = {
    "truncate": (lambda d, o: _forge(d, o, 75, truncate_after=74), 80, "truncated"),
    "rewrite": (lambda d, o: _forge(d, o, 35), 40, "rewritten"),
    "rechain": (lambda d, o: _forge(d, o, 1, new_key=SigningKey.generate()), 10, "rewritten"),
}


def pubex(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.entry.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_intact_ledger_and_its_export_match(
    published: tuple[Path, Path], tmp_path: Path
) -> None:
    data, feed_file = published
    feed = parse_feed(feed_file.read_bytes())
    with LedgerStore.open(data / "ledger", readonly=True) as ledger:
        report = check_against(ledger, feed)
        assert report.ok and report.checked == 8 and report.last_seq == 80
        write_export(ledger, tmp_path / "x.export", server_pub=bytes.fromhex(feed.server_pub))
    assert check_against(ExportReader(tmp_path / "x.export"), feed).ok
    proc = pubex("ledger", "verify", str(tmp_path / "x.export"), "--against", str(feed_file))
    assert proc.returncode == 0 and "8 match (up to seq 80)" in proc.stdout, proc.stdout


@pytest.mark.parametrize("kind", list(TAMPER))
def test_each_tamper_class_is_detected(
    published: tuple[Path, Path], tmp_path: Path, kind: str
) -> None:
    data, feed_file = published
    forge, bad_seq, reason = TAMPER[kind]
    forged = forge(data, tmp_path / "forged")
    feed = parse_feed(feed_file.read_bytes())
    # The forgery is self-consistent: its chain, replay and own checkpoints verify.
    alone = pubex("ledger", "verify", str(forged))
    assert alone.returncode == 0, alone.stdout + alone.stderr
    with LedgerStore.open(forged / "ledger", readonly=True) as ledger:
        report = check_against(ledger, feed)
        assert (report.ok, report.first_bad_seq, report.reason) == (False, bad_seq, reason)
        pub = bytes.fromhex((forged / "server.pub").read_text())
        write_export(ledger, tmp_path / "forged.export", server_pub=pub)
    export = ExportReader(tmp_path / "forged.export")
    assert export.validate().entries > 0
    by_export = check_against(export, feed)
    assert (by_export.first_bad_seq, by_export.reason) == (bad_seq, reason)
    for target in (forged, tmp_path / "forged.export"):
        proc = pubex("ledger", "verify", str(target), "--against", str(feed_file))
        assert proc.returncode == 1, proc.stdout
        expected = "other_key" if kind == "rechain" else f"at seq {bad_seq}: {reason}"
        assert expected in proc.stdout, proc.stdout
    print(f"\nT7 {kind} against published checkpoints: detected ({reason} at {bad_seq})")
