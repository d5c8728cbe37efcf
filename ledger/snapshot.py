"""The engine state snapshot as the ledger stores it (beside the entry it follows):
written by the sequencer's journal, read by recovery, replay and audit."""

from __future__ import annotations

import msgspec

from engine.router import Router
from engine.state import STATE_VERSION, hash_encoded


class SnapshotRecord(msgspec.Struct, frozen=True, array_like=True):
    seq: int
    state_hash: str
    state: bytes
    version: int = 1  # engine.state.STATE_VERSION of ``state`` (1: written before versions)


_snap_encoder = msgspec.msgpack.Encoder()
_snap_decoder = msgspec.msgpack.Decoder(SnapshotRecord)


def encode_snapshot(router: Router) -> bytes:
    state = router.snapshot()  # encoded once, hashed from the same bytes
    return _snap_encoder.encode(
        SnapshotRecord(router.applied, hash_encoded(state), state, STATE_VERSION)
    )


def decode_snapshot(data: bytes) -> SnapshotRecord:
    rec: SnapshotRecord = _snap_decoder.decode(data)
    return rec
