"""Which ledgered events are public: every subscriber -- public watchers too --
gets every *public* event of its lots in ledger order; the link carries only
these to the edges (with keys, which the edges must check).  ``PRIVATE_EVENTS``
says why each other event type is never sent (tests/gateway/test_watch_events.py
checks that every event type is in exactly one of the two)."""

from __future__ import annotations

from engine.messages import (
    AlertHandled,
    AwardLapsed,
    AwardOffered,
    BidAccepted,
    BidderRegistered,
    BlacklistChanged,
    CommandRejected,
    CommandRetried,
    DepositConfirmed,
    Event,
    IncrementChanged,
    KeyRegistered,
    LotCreated,
    LotExtended,
    LotFrozen,
    LotOpened,
    LotPublished,
    LotResumed,
    LotSold,
    LotTerminated,
    LotUnsold,
    OpeningRecord,
    PhaseChanged,
    PriceTicked,
    ReserveEntered,
    RevealRecorded,
    RuntimeStartedEvent,
    SealedBidReceived,
    SealedBidWithdrawn,
)
from gateway.public.emall import ITEM_EVENTS
from gateway.public.procurement import PUBLIC_EVENTS as PROCUREMENT_EVENTS

PUBLIC_EVENTS = (
    LotCreated,
    LotPublished,
    LotOpened,
    ReserveEntered,
    IncrementChanged,
    BidderRegistered,
    DepositConfirmed,
    BidAccepted,
    LotExtended,
    PhaseChanged,
    LotFrozen,
    LotResumed,
    LotTerminated,
    LotSold,
    LotUnsold,
    PriceTicked,
    SealedBidReceived,
    SealedBidWithdrawn,
    RevealRecorded,
    OpeningRecord,
    AwardOffered,
    AwardLapsed,
    *ITEM_EVENTS,  # e-mall items: orders by id, traders by per-item code
    *PROCUREMENT_EVENTS,  # draws, evaluation, VBP, shares, settlement: codes only
)
# What the hot paths test: one set lookup per event instead of an isinstance
# walk over the whole tuple (event types are final: no subclass of one is sent)
PUBLIC_TYPES: frozenset[type[Event]] = frozenset(PUBLIC_EVENTS)
PRIVATE_EVENTS: dict[type[Event], str] = {
    CommandRejected: "a refused command: its sender's error, and the refused amount is not a bid",
    CommandRetried: "a retry: its sender's ack",
    RuntimeStartedEvent: "the server's own record (clock rate, version)",
    KeyRegistered: "key ids are credentials' names, not public",
    BlacklistChanged: "links one subject's bidder codes across lots: an identity",
    AlertHandled: "an alert key names what is under watch (an IP, a device)",
}
