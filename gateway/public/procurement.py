"""Theory of operation: the procurement events at the edge (their frames become
commands in ``gateway.wire.translate``).

* ``PUBLIC_EVENTS``: what watchers and bidders may see of them (bidder codes
  only; a committee's points only in the final result).
"""

from __future__ import annotations

from engine.messages import (
    AwardVoided,
    ComplaintFiled,
    ComplaintHandled,
    DepositForfeited,
    DepositRefunded,
    DrawSeedCommitted,
    DrawSeedRevealed,
    EvaluationResult,
    ExpertDrawCommitted,
    ExpertDrawRevealed,
    ReauctionCreated,
    RevivalAccepted,
    RevivalOffered,
    ScoresEntered,
    SettlementChanged,
    ShareConfirmed,
    SharesAwarded,
    SharesOffered,
    VbpAwarded,
    VolumeAllocated,
)

# AlertHandled is not public: an alert key names what is under watch (an IP, a
# device); supervisors read decisions from the ledger and the supervision feed.
PUBLIC_EVENTS = (
    DepositRefunded,
    ExpertDrawCommitted,
    ExpertDrawRevealed,
    ComplaintFiled,
    ComplaintHandled,
    DrawSeedCommitted,
    DrawSeedRevealed,
    ScoresEntered,
    EvaluationResult,
    RevivalOffered,
    RevivalAccepted,
    VbpAwarded,
    VolumeAllocated,
    SettlementChanged,
    DepositForfeited,
    AwardVoided,
    ReauctionCreated,
    SharesOffered,
    ShareConfirmed,
    SharesAwarded,
)
