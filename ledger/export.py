"""Ledger exports: the portable, hash-chained file supervisors verify and replay.

Theory of operation
-------------------
LMDB has no page checksums and a forged LMDB file can crash its reader, so a
supervisor never opens an LMDB file it did not write.  ``pubex ledger export``
turns a ledger into one flat file, and everything that reads it goes through
:class:`ExportReader`, a strict streaming parser: each record's kind, length
and position are checked before a byte of it is used, the hash chain is
re-verified entry by entry, every embedded checkpoint's signature is checked
and matched against the entry hash at its seq, and a trailer binds the count,
the head and a digest of every byte before it.  Anything else -- a flipped
bit, a cut, an extra byte, a record out of place, a length that lies -- is an
:class:`ExportError` naming the byte offset where the file first goes wrong
(and the entry's seq when it is inside an entry).  The parser raises nothing
else on any input: it never trusts a length it has not bounded.

Format (all integers big-endian)::

    file    = MAGIC(8) header checkpoint* entry* trailer        (EOF right after)
    record  = kind(1) length(u32) payload(length)
    header     kind "H": msgpack ExportHeader (format, server public key, time)
    checkpoint kind "C": seq(u64) || signed checkpoint blob       (seq strictly rising)
    entry      kind "E": seq(u64) || prev(32) || hash(32) || body   (seq 1, 2, ... gap-free)
    trailer    kind "T": count(u64) || last_seq(u64) || last_hash(32) || digest(32)

``digest`` is BLAKE2b-256 of every byte before the trailer's payload.  The entry
payload is the ledger's own key and value, so the chain is checked by the same
code as the ledger's (:func:`ledger.verify.check_entry`).

The server's public key in the header is what the embedded checkpoints are
checked with; it proves nothing on its own (a forger writes their own key).
Trust comes from comparing against checkpoints the disclosure service
published (``pubex ledger verify EXPORT --against FEED``), or from a key the
supervisor already holds (``expected_key``).
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from hashlib import blake2b
from pathlib import Path
from typing import BinaryIO

import msgspec
from nacl.exceptions import CryptoError
from nacl.signing import VerifyKey

from ledger.checkpoint import BadCheckpoint, Checkpoint, verify_checkpoint
from ledger.record import GENESIS, HASH_SIZE, HEADER_SIZE, key_seq
from ledger.store import LedgerStore
from ledger.verify import check_entry

MAGIC = b"PUBEXEXP"
FORMAT_VERSION = 1
KIND_HEADER, KIND_CHECKPOINT, KIND_ENTRY, KIND_TRAILER = b"H", b"C", b"E", b"T"
_REC = struct.Struct(">cI")
_TRAILER = struct.Struct(">QQ32s32s")
MAX_HEADER_BYTES = 4096
MAX_CHECKPOINT_BYTES = 1024
MAX_ENTRY_BYTES = 64 << 20  # far above any entry a batch can hold (4 MiB by default)
_MIN_ENTRY_BYTES = 8 + HEADER_SIZE + 1


class ExportError(ValueError):
    """The export is malformed or does not verify; ``offset`` is the first bad byte."""

    def __init__(self, offset: int, reason: str, seq: int | None = None) -> None:
        where = f"byte {offset}" + (f" (entry {seq})" if seq is not None else "")
        super().__init__(f"{where}: {reason}")
        self.offset = offset
        self.reason = reason
        self.seq = seq


class ExportHeader(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    format: int
    server_pub: bytes  # 32 bytes, or empty when the ledger has no signing key
    created_ns: int


class ExportSummary(msgspec.Struct, frozen=True):
    entries: int
    checkpoints: int
    last_seq: int
    last_hash: bytes
    bytes: int


_HEADER_ENCODER = msgspec.msgpack.Encoder()
_HEADER_DECODER = msgspec.msgpack.Decoder(ExportHeader)


def is_export(path: str | Path) -> bool:
    """True when ``path`` is a file that starts like an export."""
    p = Path(path)
    if not p.is_file():
        return False
    with p.open("rb") as f:
        return f.read(len(MAGIC)) == MAGIC


# -- writing ------------------------------------------------------------------


class _Writer:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.digest = blake2b(digest_size=HASH_SIZE)
        self.size = 0

    def raw(self, data: bytes) -> None:
        self.f.write(data)
        self.digest.update(data)
        self.size += len(data)

    def record(self, kind: bytes, *parts: bytes) -> None:
        self.raw(_REC.pack(kind, sum(len(p) for p in parts)))
        for p in parts:
            self.raw(p)


def write_export(
    store: LedgerStore, out: str | Path, *, server_pub: bytes = b"", created_ns: int = 0
) -> ExportSummary:
    """Write ``store`` (up to its tail when called) to ``out``, atomically.

    The chain is checked while copying: a ledger that does not verify is not
    exported (``ExportError`` with the seq)."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists")
    last = store.last_seq()
    checkpoints = [(s, b) for s, b in store.checkpoints() if s <= last]
    tmp = out.with_name(out.name + ".partial")
    count, prev = 0, GENESIS
    with tmp.open("wb") as f:
        w = _Writer(f)
        w.raw(MAGIC)
        header = ExportHeader(FORMAT_VERSION, server_pub, created_ns)
        w.record(KIND_HEADER, _HEADER_ENCODER.encode(header))
        for seq, blob in checkpoints:
            w.record(KIND_CHECKPOINT, seq.to_bytes(8, "big"), blob)
        raw = store.iter_raw()
        try:
            for k, v in raw:
                if count == last:
                    break
                reason, _ = check_entry(count + 1, prev, k, v)
                if reason:
                    raise ExportError(0, f"the ledger does not verify: {reason}", count + 1)
                w.record(KIND_ENTRY, k, v)
                count, prev = count + 1, v[HASH_SIZE:HEADER_SIZE]
        finally:
            raw.close()
        w.raw(_REC.pack(KIND_TRAILER, _TRAILER.size))
        w.raw(_TRAILER.pack(count, count, prev, w.digest.digest()))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return ExportSummary(count, len(checkpoints), count, prev, w.size)


# -- reading ------------------------------------------------------------------


class _Source:
    """Bounded reads from a file with a running offset and digest."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.offset = 0
        self.digest = blake2b(digest_size=HASH_SIZE)

    def take(self, n: int, what: str) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise ExportError(self.offset + len(data), f"truncated in the {what}")
        self.digest.update(data)
        self.offset += n
        return data


def _bounds(kind: bytes) -> tuple[int, int]:
    if kind == KIND_HEADER:
        return 1, MAX_HEADER_BYTES
    if kind == KIND_CHECKPOINT:
        return 9, MAX_CHECKPOINT_BYTES
    if kind == KIND_ENTRY:
        return _MIN_ENTRY_BYTES, MAX_ENTRY_BYTES
    return _TRAILER.size, _TRAILER.size


class ExportReader:
    """A strict, streaming reader of one export (see the module docstring).

    Offers the read side of :class:`~ledger.store.LedgerStore` that verify and
    replay use (``iter_raw``, ``iter_entries``, ``get``, ``last_seq``,
    ``checkpoints``, no snapshots); every pass re-verifies the whole file, so a
    file changed between passes is still refused, never trusted."""

    def __init__(self, path: str | Path | bytes, *, expected_key: bytes | None = None) -> None:
        self.path = path if isinstance(path, bytes) else Path(path)  # bytes: in memory
        self.expected_key = expected_key
        self.header: ExportHeader | None = None
        self._checkpoints: list[tuple[int, bytes]] = []
        self._summary: ExportSummary | None = None
        self._hashes: bytearray | None = None

    # -- the one parser ----------------------------------------------------------

    def _records(self) -> Iterator[tuple[int, bytes, bytes]]:
        """Yield (offset, key, value) of each entry after validating everything
        before it; the trailer is checked when the entries end."""
        try:
            f = io.BytesIO(self.path) if isinstance(self.path, bytes) else self.path.open("rb")
        except OSError as e:
            raise ExportError(0, f"cannot read: {e.strerror}") from e
        with f:
            src = _Source(f)
            if src.take(len(MAGIC), "magic") != MAGIC:
                raise ExportError(0, "not a pubex export (bad magic)")
            key = self._header(src)
            cps, first = self._checkpoint_records(src, key)
            yield from self._entries(src, cps, first)

    def _next_record(self, src: _Source) -> tuple[int, bytes, bytes]:
        at = src.offset
        kind, length = _REC.unpack(src.take(_REC.size, "record header"))
        if kind not in (KIND_HEADER, KIND_CHECKPOINT, KIND_ENTRY, KIND_TRAILER):
            raise ExportError(at, f"unknown record kind {kind!r}")
        lo, hi = _bounds(kind)
        if not lo <= length <= hi:
            raise ExportError(at + 1, f"record length {length} out of bounds for {kind!r}")
        prefix = src.digest.digest() if kind == KIND_TRAILER else b""  # what it covers
        try:
            return at, kind, prefix + src.take(length, "record")
        except ExportError:  # blame the record whose length runs past the end
            raise ExportError(at, f"{kind!r} record of {length} bytes runs past the end") from None

    def _header(self, src: _Source) -> VerifyKey | None:
        at, kind, payload = self._next_record(src)
        if kind != KIND_HEADER:
            raise ExportError(at, "the first record must be the header")
        try:
            header = _HEADER_DECODER.decode(payload)
        except (
            msgspec.DecodeError,
            UnicodeDecodeError,
        ) as e:  # (msgspec: a str not UTF-8)
            raise ExportError(at + _REC.size, f"undecodable header: {e}") from e
        if header.format != FORMAT_VERSION:
            raise ExportError(at + _REC.size, f"unsupported export format {header.format}")
        if len(header.server_pub) not in (0, 32):
            raise ExportError(at + _REC.size, "server public key must be 32 bytes")
        if self.expected_key is not None and header.server_pub != self.expected_key:
            raise ExportError(at + _REC.size, "signed by a different server key")
        self.header = header
        return VerifyKey(header.server_pub) if header.server_pub else None

    def _checkpoint_records(
        self, src: _Source, key: VerifyKey | None
    ) -> tuple[dict[int, tuple[int, Checkpoint]], tuple[int, bytes, bytes]]:
        """The checkpoint records (seq -> (offset, checkpoint)) and the first
        record after them."""
        cps: dict[int, tuple[int, Checkpoint]] = {}
        blobs: list[tuple[int, bytes]] = []
        last = 0
        while True:
            at, kind, payload = self._next_record(src)
            if kind != KIND_CHECKPOINT:
                self._checkpoints = blobs
                return cps, (at, kind, payload)
            seq, blob = int.from_bytes(payload[:8], "big"), payload[8:]
            if key is None:
                raise ExportError(at, "a checkpoint in an export without a server key")
            if seq <= last:
                raise ExportError(at + _REC.size, f"checkpoint seq {seq} out of order")
            try:
                cp = verify_checkpoint(key, blob)
            except (BadCheckpoint, CryptoError, ValueError) as e:
                raise ExportError(at + _REC.size + 8, f"checkpoint {seq}: {e}") from e
            if cp.seq != seq or len(cp.entry_hash) != HASH_SIZE:
                raise ExportError(at + _REC.size, f"checkpoint {seq} signs another seq")
            cps[seq], last = (at, cp), seq
            blobs.append((seq, blob))

    def _entries(
        self,
        src: _Source,
        cps: dict[int, tuple[int, Checkpoint]],
        first: tuple[int, bytes, bytes],
    ) -> Iterator[tuple[int, bytes, bytes]]:
        at, kind, payload = first
        count, prev = 0, GENESIS
        while kind == KIND_ENTRY:
            expected = count + 1
            k, v = payload[:8], payload[8:]
            reason, _ = check_entry(expected, prev, k, v)
            if reason:  # the record as a whole: its length may be what lies
                raise ExportError(at, reason, expected)
            h = v[HASH_SIZE:HEADER_SIZE]
            cp = cps.get(expected)
            if cp is not None and cp[1].entry_hash != h:
                raise ExportError(at, "differs from its signed checkpoint", expected)
            yield at, k, v
            count, prev = expected, h
            at, kind, payload = self._next_record(src)
        self._trailer(src, at, kind, payload, count, prev, cps)

    def _trailer(
        self,
        src: _Source,
        at: int,
        kind: bytes,
        payload: bytes,
        count: int,
        last_hash: bytes,
        cps: dict[int, tuple[int, Checkpoint]],
    ) -> None:
        if kind != KIND_TRAILER:
            raise ExportError(at, f"record {kind!r} out of place")
        digest_here, body = payload[:HASH_SIZE], payload[HASH_SIZE:]
        n, last_seq, head, digest = _TRAILER.unpack(body)
        if (n, last_seq, head) != (count, count, last_hash):
            raise ExportError(at + _REC.size, "trailer does not match the entries")
        if digest != digest_here:
            raise ExportError(at + _REC.size + 48, "digest mismatch (bytes altered)")
        beyond = [s for s in cps if s > count]
        if beyond:
            raise ExportError(cps[beyond[0]][0], f"checkpoint {beyond[0]} beyond the last entry")
        if src.f.read(1):
            raise ExportError(src.offset, "bytes after the trailer")
        self._summary = ExportSummary(count, len(cps), count, last_hash, src.offset)

    # -- whole-file checks --------------------------------------------------------

    def validate(self) -> ExportSummary:
        """One full pass; raises ExportError at the first bad byte."""
        for _ in self._records():
            pass
        assert self._summary is not None
        return self._summary

    # -- the LedgerStore read side --------------------------------------------------

    def iter_raw(self, from_seq: int = 1) -> Iterator[tuple[bytes, bytes]]:
        for _, k, v in self._records():
            if key_seq(k) >= from_seq:
                yield k, v

    def iter_entries(
        self, from_seq: int = 1, until_seq: int | None = None
    ) -> Iterator[tuple[int, bytes, bytes, bytes]]:
        for _, k, v in self._records():
            seq = key_seq(k)
            if until_seq is not None and seq > until_seq:
                return
            if seq >= from_seq:
                yield seq, v[:HASH_SIZE], v[HASH_SIZE:HEADER_SIZE], v[HEADER_SIZE:]

    def summary(self) -> ExportSummary:
        return self._summary if self._summary is not None else self.validate()

    def last_seq(self) -> int:
        return self.summary().last_seq

    def last_hash(self) -> bytes:
        return self.summary().last_hash

    def checkpoints(self) -> list[tuple[int, bytes]]:
        self.summary()
        return list(self._checkpoints)

    def server_pub(self) -> bytes:
        self.summary()
        assert self.header is not None
        return self.header.server_pub

    def get(self, seq: int) -> tuple[bytes, bytes, bytes] | None:
        """(prev, hash, b"") of entry ``seq`` -- hashes only (from an index of
        32 bytes per entry built on first use); bodies stream via iter_entries."""
        if self._hashes is None:
            hashes = bytearray()
            for _, _k, v in self._records():
                hashes += v[HASH_SIZE:HEADER_SIZE]
            self._hashes = hashes
        n = len(self._hashes) // HASH_SIZE
        if not 1 <= seq <= n:
            return None
        h = bytes(self._hashes[(seq - 1) * HASH_SIZE : seq * HASH_SIZE])
        prev = (
            GENESIS
            if seq == 1
            else bytes(self._hashes[(seq - 2) * HASH_SIZE : (seq - 1) * HASH_SIZE])
        )
        return prev, h, b""

    def latest_snapshot(self) -> None:
        return None  # exports carry no snapshots: supervisors replay from genesis

    def snapshot_at_or_before(self, seq: int) -> None:
        return None

    def close(self) -> None:
        pass
