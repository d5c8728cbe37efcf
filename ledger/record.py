"""Ledger record format and hash chain (byte-oriented: knows nothing of the engine).

An entry's BODY is an :class:`EntryBody` encoded as array-like msgpack.  The
chain is::

    body_hash = BLAKE2b-256(body_bytes)
    hash      = BLAKE2b-256(prev_hash || body_hash)        prev_hash(1) = GENESIS

Hashing the body first means an inclusion proof for entry k against a later
published head needs only the 32-byte body hashes of entries k+1..n
(:func:`fold_body_hashes`), not their bodies.

Stored LMDB value = prev_hash(32) || hash(32) || body_bytes, key = seq as a
big-endian u64, so LMDB's byte order is sequence order and appends are cheap.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from hashlib import blake2b

import msgspec

HASH_SIZE = 32
HEADER_SIZE = 2 * HASH_SIZE
GENESIS = bytes(HASH_SIZE)


class EntryBody(msgspec.Struct, frozen=True, array_like=True):
    """One ledger entry's body; ``command``/``events``/``meta`` are opaque bytes."""

    seq: int  # 1, 2, 3, ... gap-free
    ts_ns: int  # sequencer time
    command: bytes  # the command exactly as received
    events: bytes  # the events it produced
    meta: bytes = b""  # connection facts etc.


class Envelope(msgspec.Struct, frozen=True, array_like=True):
    """An entry's ``meta`` when the gateway supplies it: the command as received
    at the edge -- who (role, identity), from where (client IP, device
    fingerprint), and the signed frame (payload, signature) so a supervisor can
    re-verify a bid's signature years later."""

    role: str
    identity: str
    ip: str
    fingerprint: str
    payload: str = ""
    sig: str = ""
    # a service's command made for a staff member (the registry's HTTP writes):
    # that staff id (RULES.md §8: organisers act under their real-name logins)
    actor: str = ""


# One encoder/decoder per module: building them per call costs more than encoding.
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(EntryBody)
_ENVELOPE_DECODER = msgspec.msgpack.Decoder(Envelope)
_U64 = struct.Struct(">Q")
_pack_u64 = _U64.pack


def encode_body(body: EntryBody) -> bytes:
    """EntryBody -> body bytes (array-like msgpack)."""
    return _ENCODER.encode(body)


def decode_body(data: bytes) -> EntryBody:
    """Body bytes -> EntryBody; raises ``msgspec.DecodeError`` if malformed."""
    return _DECODER.decode(data)


def encode_envelope(env: Envelope) -> bytes:
    return _ENCODER.encode(env)


def decode_envelope(meta: bytes) -> Envelope | None:
    """An entry's ``meta`` -> its Envelope; None when empty or not an envelope
    (entries the runtime itself sequences carry no connection facts)."""
    if not meta:
        return None
    try:
        env: Envelope = _ENVELOPE_DECODER.decode(meta)
    except (
        msgspec.DecodeError,
        UnicodeDecodeError,
    ):  # (msgspec: a str not UTF-8)
        return None
    return env


def body_hash(body: bytes) -> bytes:
    """BLAKE2b-256 of the body bytes."""
    return blake2b(body, digest_size=HASH_SIZE).digest()


def link(prev: bytes, bhash: bytes) -> bytes:
    """Chain step from a body hash: BLAKE2b-256(prev || body_hash)."""
    return blake2b(prev + bhash, digest_size=HASH_SIZE).digest()


def chain_hash(prev: bytes, body: bytes) -> bytes:
    """The entry hash for ``body`` following ``prev``."""
    # One concatenation of 64 bytes beats a second update() call on CPython.
    return blake2b(
        prev + blake2b(body, digest_size=HASH_SIZE).digest(), digest_size=HASH_SIZE
    ).digest()


def fold_body_hashes(start: bytes, body_hashes: Iterable[bytes]) -> bytes:
    """Fold later entries' body hashes onto ``start`` (inclusion-proof check)."""
    h = start
    for bh in body_hashes:
        h = link(h, bh)
    return h


def pack_value(prev: bytes, h: bytes, body: bytes) -> bytes:
    """Stored value = prev(32) || hash(32) || body."""
    # Cheap length guard: a short hash would silently shift every later field.
    if len(prev) != HASH_SIZE or len(h) != HASH_SIZE:
        raise ValueError("prev and hash must be 32 bytes")
    return prev + h + body


def unpack_value(v: bytes) -> tuple[bytes, bytes, bytes]:
    """Stored value -> (prev, hash, body)."""
    if len(v) < HEADER_SIZE:
        raise ValueError(f"ledger value too short ({len(v)} bytes)")
    return v[:HASH_SIZE], v[HASH_SIZE:HEADER_SIZE], v[HEADER_SIZE:]


_EMPTY_B2 = blake2b(digest_size=HASH_SIZE)  # copying a keyed-up state is cheaper than a new one


def make_entry(prev: bytes, body: bytes) -> tuple[bytes, bytes]:
    """Hash ``body`` onto ``prev``; return (hash, packed value) for a Batch."""
    digest, value, _ = chain_entry(prev, body)
    return digest, value


def chain_entry(prev: bytes, body: bytes) -> tuple[bytes, bytes, bytes]:
    """The writer's hot path: (hash, packed value, body hash) -- the same result
    as :func:`chain_hash` + :func:`pack_value`, from copies of a prebuilt
    BLAKE2b state (a constructor costs ~1 µs here).  The body hash is what a
    receipt's inclusion proof is made of."""
    bh = _EMPTY_B2.copy()
    bh.update(body)
    body_digest = bh.digest()
    h = _EMPTY_B2.copy()
    h.update(prev)
    h.update(body_digest)
    digest = h.digest()
    return digest, prev + digest + body, body_digest


def seq_key(seq: int) -> bytes:
    """Sequence number -> 8-byte big-endian LMDB key."""
    return _pack_u64(seq)


def key_seq(k: bytes) -> int:
    """8-byte big-endian LMDB key -> sequence number."""
    if len(k) != 8:
        raise ValueError(f"ledger key must be 8 bytes, got {len(k)}")
    return int.from_bytes(k, "big")
