"""Server signing key, signed checkpoints and signed receipts (Ed25519).

A checkpoint is a signed ledger head (seq, entry hash, time) published through
disclosure: once published, a rewrite of anything at or before that seq is
detectable even if the rewriter re-chains.  A receipt is the same statement for
one entry, returned to the bidder with the acknowledgement, which closes the
tail (a truncation that drops an acknowledged entry contradicts a receipt).

Each kind has its own domain tag, so a signature over one can never be replayed
as the other (or as a bid signature).  Blob = signature(64) || encoded struct;
the tag is signed but not stored.
"""

from __future__ import annotations

import os
import stat
from hashlib import blake2b
from pathlib import Path

import msgspec
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

CHECKPOINT_TAG = b"pubex-checkpoint-v1"
RECEIPT_TAG = b"pubex-receipt-v1"
SIG_SIZE = 64
KEY_FILE = "server.key"
PUB_FILE = "server.pub"
SIMULATE_KEY_TAG = b"pubex-simulate-key-v1"


class BadCheckpoint(ValueError):
    """A checkpoint or receipt blob is malformed or its signature does not verify."""


class KeyFileError(RuntimeError):
    """The server key file is unreadable, malformed or readable by others."""


class Checkpoint(msgspec.Struct, frozen=True, array_like=True):
    seq: int
    entry_hash: bytes
    ts_ns: int


class Receipt(msgspec.Struct, frozen=True, array_like=True):
    seq: int
    entry_hash: bytes
    ts_ns: int


_ENCODER = msgspec.msgpack.Encoder()
_CP_DECODER = msgspec.msgpack.Decoder(Checkpoint)
_RC_DECODER = msgspec.msgpack.Decoder(Receipt)


# -- key file ------------------------------------------------------------------


def _fsync_dir(d: Path) -> None:
    """Make a newly created file's directory entry durable."""
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` exclusively with ``mode`` (no umask window), fsync'd."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_key(path: Path) -> SigningKey:
    # Refuse a key others can read, like ssh does: a leaked key forges history.
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise KeyFileError(f"{path} must not be accessible by group/others (chmod 600)")
    try:
        return SigningKey(bytes.fromhex(path.read_text().strip()))
    except ValueError as e:
        raise KeyFileError(f"{path}: not a hex Ed25519 seed") from e


def load_or_create_signing_key(data_dir: str | Path) -> SigningKey:
    """Load ``data_dir/server.key`` (hex seed, 0600) or create it; keep server.pub."""
    d = Path(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = d / KEY_FILE, d / PUB_FILE
    if key_path.exists():
        key = _read_key(key_path)
    else:
        key = SigningKey.generate()
        _write_new(key_path, bytes(key).hex().encode() + b"\n", 0o600)
    pub_hex = bytes(key.verify_key).hex() + "\n"
    if not pub_path.exists() or pub_path.read_text() != pub_hex:
        pub_path.unlink(missing_ok=True)
        _write_new(pub_path, pub_hex.encode(), 0o644)
    _fsync_dir(d)
    return key


def simulation_signing_key(seed: int) -> SigningKey:
    """The simulator's server key, derived from its seed: Ed25519 seed =
    BLAKE2b-256(``pubex-simulate-key-v1`` || the seed in decimal ASCII).

    Deterministic, so the same seed still gives a byte-identical ledger,
    checkpoints included -- and public by construction (anyone who knows the
    seed can sign as it): a simulated ledger's checkpoints prove it was not
    altered since it was simulated, never who produced it."""
    return SigningKey(blake2b(SIMULATE_KEY_TAG + str(seed).encode(), digest_size=32).digest())


def load_verify_key(data_dir: str | Path) -> VerifyKey:
    """The public key from ``data_dir/server.pub``."""
    return VerifyKey(bytes.fromhex((Path(data_dir) / PUB_FILE).read_text().strip()))


# -- signing -------------------------------------------------------------------


def _sign(key: SigningKey, tag: bytes, obj: Checkpoint | Receipt) -> bytes:
    enc = _ENCODER.encode(obj)
    return key.sign(tag + enc).signature + enc


def _open(verify_key: VerifyKey, tag: bytes, blob: bytes) -> bytes:
    """Check the signature; return the encoded payload."""
    if len(blob) <= SIG_SIZE:
        raise BadCheckpoint("blob too short")
    sig, enc = blob[:SIG_SIZE], blob[SIG_SIZE:]
    try:
        verify_key.verify(tag + enc, sig)
    except BadSignatureError as e:
        raise BadCheckpoint("bad signature") from e
    return enc


def sign_checkpoint(key: SigningKey, cp: Checkpoint) -> bytes:
    return _sign(key, CHECKPOINT_TAG, cp)


def verify_checkpoint(verify_key: VerifyKey, blob: bytes) -> Checkpoint:
    enc = _open(verify_key, CHECKPOINT_TAG, blob)
    try:
        return _CP_DECODER.decode(enc)
    except (
        msgspec.DecodeError,
        UnicodeDecodeError,
    ) as e:  # (msgspec: a str not UTF-8)
        raise BadCheckpoint("undecodable checkpoint") from e


def sign_receipt(key: SigningKey, rc: Receipt) -> bytes:
    return _sign(key, RECEIPT_TAG, rc)


def verify_receipt(verify_key: VerifyKey, blob: bytes) -> Receipt:
    enc = _open(verify_key, RECEIPT_TAG, blob)
    try:
        return _RC_DECODER.decode(enc)
    except (
        msgspec.DecodeError,
        UnicodeDecodeError,
    ) as e:  # (msgspec: a str not UTF-8)
        raise BadCheckpoint("undecodable receipt") from e
