"""Keys a companion's store can always hold, whatever the ledger says.

LMDB keys are at most 511 bytes (``MDB_BAD_VALSIZE`` beyond, on a put *and* on
a get).  Ids in the ledger are bounded today (``[limits]``: 64 characters of
``[A-Za-z0-9._-]``) but older ledgers hold whatever was accepted then -- a
600-character bidder id, non-ASCII, NUL -- and a projection must store every
entry of every ledger it follows.  So every key built from a ledger string
goes through :func:`key_part`:

* a string whose UTF-8 is at most :data:`PART_MAX` bytes and holds no NUL is
  its UTF-8 itself (every id valid today: existing stores keep their keys);
* anything else is ``0xFF`` followed by the 64 hex digits of its SHA-256 --
  65 bytes, no NUL.  ``0xFF`` never occurs in UTF-8, so a digest key cannot
  equal a plain one; NUL stays the separator of composite keys (``lot NUL
  bidder``), and a prefix scan over ``key_part(lot) + NUL`` finds exactly that
  lot's rows.

The original string is always kept in the value (every record names its
ids), so nothing is lost by hashing: readers decode the value, never the key.
A composite of two parts is at most ``2 * PART_MAX + 1`` bytes, plus an
8-byte suffix where one is added: well under the 511-byte limit.
"""

from __future__ import annotations

import hashlib

__all__ = ["HASHED", "PART_MAX", "key_pair", "key_part"]

PART_MAX = 240
HASHED = b"\xff"


def key_part(s: str) -> bytes:
    """A storable, NUL-free key for the ledger string ``s`` (see the module doc)."""
    raw = s.encode("utf-8", "surrogatepass")
    if len(raw) <= PART_MAX and b"\x00" not in raw:
        return raw
    return HASHED + hashlib.sha256(raw).hexdigest().encode()


def key_pair(a: str, b: str) -> bytes:
    """``key_part(a) NUL key_part(b)``: rows of one ``a`` share a scannable prefix."""
    return key_part(a) + b"\x00" + key_part(b)
