"""Server key, signed checkpoints and receipts."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from ledger.checkpoint import (
    BadCheckpoint,
    Checkpoint,
    KeyFileError,
    Receipt,
    load_or_create_signing_key,
    load_verify_key,
    sign_checkpoint,
    sign_receipt,
    verify_checkpoint,
    verify_receipt,
)

KEY = SigningKey(bytes(range(32)))
CP = Checkpoint(seq=42, entry_hash=b"\xab" * 32, ts_ns=1_700_000_000_000_000_000)
RC = Receipt(seq=42, entry_hash=b"\xab" * 32, ts_ns=1_700_000_000_000_000_000)


def test_key_created_once_with_0600(tmp_path: Path) -> None:
    k1 = load_or_create_signing_key(tmp_path)
    mode = stat.S_IMODE((tmp_path / "server.key").stat().st_mode)
    assert mode == 0o600
    k2 = load_or_create_signing_key(tmp_path)
    assert bytes(k1) == bytes(k2)
    assert load_verify_key(tmp_path) == k1.verify_key
    assert (tmp_path / "server.pub").read_text().strip() == bytes(k1.verify_key).hex()


def test_missing_pub_is_rewritten(tmp_path: Path) -> None:
    k = load_or_create_signing_key(tmp_path)
    (tmp_path / "server.pub").unlink()
    load_or_create_signing_key(tmp_path)
    assert load_verify_key(tmp_path) == k.verify_key


def test_loose_key_permissions_refused(tmp_path: Path) -> None:
    load_or_create_signing_key(tmp_path)
    os.chmod(tmp_path / "server.key", 0o644)
    with pytest.raises(KeyFileError):
        load_or_create_signing_key(tmp_path)


def test_malformed_key_refused(tmp_path: Path) -> None:
    p = tmp_path / "server.key"
    p.write_text("not hex")
    os.chmod(p, 0o600)
    with pytest.raises(KeyFileError):
        load_or_create_signing_key(tmp_path)


def test_checkpoint_and_receipt_roundtrip() -> None:
    assert verify_checkpoint(KEY.verify_key, sign_checkpoint(KEY, CP)) == CP
    assert verify_receipt(KEY.verify_key, sign_receipt(KEY, RC)) == RC


def test_domain_separation() -> None:
    with pytest.raises(BadCheckpoint):
        verify_checkpoint(KEY.verify_key, sign_receipt(KEY, RC))
    with pytest.raises(BadCheckpoint):
        verify_receipt(KEY.verify_key, sign_checkpoint(KEY, CP))


def test_wrong_key_and_short_blob() -> None:
    other = SigningKey(bytes(32))
    with pytest.raises(BadCheckpoint):
        verify_checkpoint(other.verify_key, sign_checkpoint(KEY, CP))
    with pytest.raises(BadCheckpoint):
        verify_checkpoint(KEY.verify_key, b"x" * 64)


@given(st.data())
def test_any_byte_flip_is_refused(data: st.DataObject) -> None:
    signer, verifier = data.draw(
        st.sampled_from([(sign_checkpoint, verify_checkpoint), (sign_receipt, verify_receipt)])
    )
    obj = CP if signer is sign_checkpoint else RC
    blob = bytearray(signer(KEY, obj))
    i = data.draw(st.integers(0, len(blob) - 1))
    blob[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(BadCheckpoint):
        verifier(KEY.verify_key, bytes(blob))


def test_signed_payload_without_valid_struct_is_refused() -> None:
    from ledger.checkpoint import CHECKPOINT_TAG

    enc = b"\x91\x01"  # msgpack [1]: validly signed, not a Checkpoint
    blob = KEY.sign(CHECKPOINT_TAG + enc).signature + enc
    with pytest.raises(BadCheckpoint):
        verify_checkpoint(KEY.verify_key, blob)
