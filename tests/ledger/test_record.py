"""Record format and hash chain."""

from __future__ import annotations

from hashlib import blake2b

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.record import (
    GENESIS,
    EntryBody,
    body_hash,
    chain_hash,
    decode_body,
    encode_body,
    fold_body_hashes,
    key_seq,
    link,
    make_entry,
    pack_value,
    seq_key,
    unpack_value,
)

hashes = st.binary(min_size=32, max_size=32)
seqs = st.integers(min_value=0, max_value=2**64 - 1)


def test_genesis_is_32_zero_bytes() -> None:
    assert GENESIS == b"\x00" * 32


def test_chain_hash_matches_definition() -> None:
    body = b"hello"
    bh = blake2b(body, digest_size=32).digest()
    assert body_hash(body) == bh
    expected = blake2b(GENESIS + bh, digest_size=32).digest()
    assert chain_hash(GENESIS, body) == expected == link(GENESIS, bh)


@given(
    st.builds(
        EntryBody,
        st.integers(0, 2**63),
        st.integers(0, 2**63),
        st.binary(),
        st.binary(),
        st.binary(),
    )
)
def test_body_roundtrip(b: EntryBody) -> None:
    assert decode_body(encode_body(b)) == b


def test_body_is_array_like_and_meta_defaults() -> None:
    enc = msgspec.msgpack.encode([7, 9, b"c", b"e"])
    assert decode_body(enc) == EntryBody(seq=7, ts_ns=9, command=b"c", events=b"e", meta=b"")
    assert msgspec.msgpack.decode(encode_body(EntryBody(1, 2, b"c", b"e", b"m"))) == [
        1,
        2,
        b"c",
        b"e",
        b"m",
    ]


@pytest.mark.parametrize(
    "garbage", [b"", b"\xc1", msgspec.msgpack.encode({"seq": 1}), b"\x93\x01\x02\x03"]
)
def test_decode_rejects_garbage(garbage: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_body(garbage)


@given(hashes, hashes, st.binary(max_size=300))
def test_pack_unpack_roundtrip(prev: bytes, h: bytes, body: bytes) -> None:
    v = pack_value(prev, h, body)
    assert len(v) == 64 + len(body)
    assert unpack_value(v) == (prev, h, body)


def test_pack_and_unpack_reject_bad_lengths() -> None:
    with pytest.raises(ValueError):
        pack_value(b"short", GENESIS, b"")
    with pytest.raises(ValueError):
        pack_value(GENESIS, b"x" * 33, b"")
    with pytest.raises(ValueError):
        unpack_value(b"x" * 63)


def test_make_entry() -> None:
    h, v = make_entry(GENESIS, b"body")
    assert h == chain_hash(GENESIS, b"body")
    assert unpack_value(v) == (GENESIS, h, b"body")


@given(seqs, seqs)
def test_seq_key_orders_like_ints(a: int, b: int) -> None:
    assert key_seq(seq_key(a)) == a
    assert (a < b) == (seq_key(a) < seq_key(b))


def test_key_seq_rejects_bad_length() -> None:
    with pytest.raises(ValueError):
        key_seq(b"\x00" * 7)


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=20), st.data())
def test_inclusion_proof_needs_only_later_body_hashes(
    bodies: list[bytes], data: st.DataObject
) -> None:
    chain = [GENESIS]
    for b in bodies:
        chain.append(chain_hash(chain[-1], b))
    k = data.draw(st.integers(1, len(bodies)))
    later = [body_hash(b) for b in bodies[k:]]
    assert fold_body_hashes(chain[k], later) == chain[-1]


def test_bytes_that_are_not_utf8_where_a_str_stands_are_refused_never_raised() -> None:
    """msgspec raises UnicodeDecodeError (not DecodeError) for a msgpack str
    that is not UTF-8: an envelope or a body forged that way is "not one",
    never an exception out of the reader (the link's fuzz found it)."""
    import msgspec

    from ledger.record import Envelope, decode_envelope, encode_envelope

    good = encode_envelope(Envelope("bidder", "k1", "10.0.0.1", "f"))
    assert decode_envelope(good) == Envelope("bidder", "k1", "10.0.0.1", "f")
    bad = good.replace(b"k1", b"\xff\xfe")
    with pytest.raises(UnicodeDecodeError):  # what msgspec itself does
        msgspec.msgpack.Decoder(Envelope).decode(bad)
    assert decode_envelope(bad) is None
