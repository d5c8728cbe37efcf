"""Theory of operation: committed draws.

A draw (a tie-break, a lottery) must be re-runnable by anyone and unbiasable
by whoever runs it.  Staff generate a secret seed outside the engine (a
CSPRNG in the tool that sends the command), commit ``seed_hash(seed)`` in the
ledger *before* the submission deadline -- before anyone can know which bids
will tie -- and reveal the seed after it.  The engine checks the reveal
against the commitment, then orders tied candidates by
``draw_key(seed, lot, code)``: a BLAKE2b of the seed, the lot and the bidder
code.  Nothing here reads a clock or an unseeded generator.
"""

from __future__ import annotations

import hashlib

DRAW_DOMAIN = b"pubex-draw-v1"


def seed_hash(seed_hex: str) -> str:
    """What staff commit (hex), for a seed given as hex."""
    return hashlib.blake2b(bytes.fromhex(seed_hex), digest_size=32).hexdigest()


def draw_key(seed_hex: str, lot_id: str, bidder_code: str) -> bytes:
    """The draw order of one candidate: smaller draws first."""
    text = b"|".join((DRAW_DOMAIN, bytes.fromhex(seed_hex), lot_id.encode(), bidder_code.encode()))
    return hashlib.blake2b(text, digest_size=32).digest()


def valid_seed_hex(seed_hex: str) -> bool:
    """16 to 64 bytes of hex."""
    if not 32 <= len(seed_hex) <= 128 or len(seed_hex) % 2:
        return False
    return all(c in "0123456789abcdefABCDEF" for c in seed_hex)
