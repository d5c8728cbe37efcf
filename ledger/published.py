"""Checking a ledger or an export against the checkpoints disclosure published.

Theory of operation
-------------------
The hash chain catches edits inside a copy but not a copy that was cut short
or rewritten and re-chained from some point on (or from genesis, with a new
server key).  The disclosure service publishes every signed checkpoint (seq,
entry hash, time, the server's signature) as it appears; once a checkpoint is
out, nobody can change anything at or before its seq without contradicting it.
:func:`check_against` compares a copy with such a feed:

* every published checkpoint must carry a valid signature under the server's
  key (the feed's, or one the supervisor pins with ``expected_key``);
* the copy must hold the entry at each published seq -- a missing one is a
  truncated tail (``truncated``);
* with exactly the published hash -- a different one is a rewrite behind the
  checkpoint, re-chained or not (``rewritten``);
* an export must be signed by the same key -- a different one is a full
  re-chain under a forger's key (``other_key``).

A feed is JSON: ``{"server_pub": HEX, "checkpoints": [{"seq", "entry_hash",
"ts_ns", "blob"}], "next": SEQ}`` (``blob`` is the signed checkpoint in hex;
``entry_hash`` and ``ts_ns`` are there for people, the blob is what counts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import msgspec
from nacl.signing import VerifyKey

from ledger.checkpoint import BadCheckpoint, verify_checkpoint


class PublishedCheckpoint(msgspec.Struct, frozen=True):
    seq: int
    entry_hash: str
    ts_ns: int
    blob: str


class CheckpointFeed(msgspec.Struct, frozen=True):
    server_pub: str
    checkpoints: list[PublishedCheckpoint]
    next: int = 0


class AgainstReport(msgspec.Struct, frozen=True):
    ok: bool
    checked: int  # published checkpoints that matched
    last_seq: int  # the highest seq they vouch for
    first_bad_seq: int | None = None
    reason: str = ""  # "" | bad_feed | bad_signature | truncated | rewritten | other_key


class HashSource(Protocol):
    def get(self, seq: int) -> tuple[bytes, bytes, bytes] | None: ...


_feed_decoder = msgspec.json.Decoder(CheckpointFeed)


def parse_feed(data: bytes) -> CheckpointFeed:
    """One page (or a saved whole feed); raises ``ValueError`` when malformed."""
    try:
        return _feed_decoder.decode(data)
    except (
        msgspec.DecodeError,
        UnicodeDecodeError,
    ) as e:  # (msgspec: a str not UTF-8)
        raise ValueError(f"not a checkpoint feed: {e}") from e


def fetch_feed(pages: Callable[[int], bytes]) -> CheckpointFeed:
    """Every page of a paged feed: ``pages(since)`` returns the page after
    ``since``; stops at the first empty page."""
    since, key = 0, ""
    found: list[PublishedCheckpoint] = []
    while True:
        page = parse_feed(pages(since))
        key = key or page.server_pub
        if page.server_pub != key:
            raise ValueError("the feed changed server key between pages")
        if not page.checkpoints:
            return CheckpointFeed(key, found, since)
        found.extend(page.checkpoints)
        if page.next <= since:
            raise ValueError("the feed does not advance")
        since = page.next


def check_against(
    source: HashSource,
    feed: CheckpointFeed,
    *,
    expected_key: bytes | None = None,
    source_key: bytes | None = None,
) -> AgainstReport:
    """Compare ``source`` (a LedgerStore or an ExportReader) with ``feed``."""
    try:
        key_bytes = bytes.fromhex(feed.server_pub)
        key = VerifyKey(key_bytes)
    except (ValueError, TypeError) as e:
        return AgainstReport(False, 0, 0, None, f"bad_feed: server key: {e}")
    if expected_key is not None and key_bytes != expected_key:
        return AgainstReport(False, 0, 0, None, "bad_feed: not the expected server key")
    if source_key and source_key != key_bytes:
        return AgainstReport(False, 0, 0, None, "other_key: the copy is signed by another key")
    checked, last = 0, 0
    for pc in sorted(feed.checkpoints, key=lambda c: c.seq):
        try:
            cp = verify_checkpoint(key, bytes.fromhex(pc.blob))
        except (BadCheckpoint, ValueError):
            return AgainstReport(False, checked, last, pc.seq, "bad_signature")
        found = source.get(cp.seq)
        if found is None:
            return AgainstReport(False, checked, last, cp.seq, "truncated")
        if found[1] != cp.entry_hash:
            return AgainstReport(False, checked, last, cp.seq, "rewritten")
        checked, last = checked + 1, max(last, cp.seq)
    return AgainstReport(True, checked, last)
