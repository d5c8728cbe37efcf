"""Registry (主体库 / 保证金 / 信用 / 专家库, RULES.md §0, §1.2, §6.5).

* ``model``      -- subjects, keys, registrations, deposit states, experts, draws, intents
* ``projection`` -- the follower projection: everything derived from the ledger
  (subjects and keys, lot registrations, deposits confirmed -> held -> applied /
  refunded / forfeited with a journal of every step, the blacklist, and the
  ledger's record of the registry's own commands)
* ``experts``    -- the expert database and committed random draws with avoidance
* ``writer``     -- exactly-once writes through the gateway as ``service:<id>``:
  intents stored with their client_seq before they are sent
* ``service``    -- ``pubex registry``: follower + writer + staff HTTP API + /metrics
* ``provision``  -- ``pubex registry provision``: bulk keys, registrations, deposits

Engine commands this service needs and does not have yet:

* ``RefundDeposit(origin, client_seq, lot_id, bidder_id, amount_fen, bank_ref)``
  (registry origin; accepted once per registration, only after the lot's
  outcome is final and not for the winner's or a forfeited deposit; event
  ``DepositRefunded(lot_id, bidder_code, amount_fen)``).  Today a refund is
  the registry-side transition ``confirmed -> refunded`` derived from the
  ledgered close (``rg_steps``); with the command the registry would submit it
  through its outbox exactly like a confirmation and derive the state from
  ``DepositRefunded`` instead.  ``ApplyDeposit`` is not needed: LotSold /
  SettlementChanged(paid) already fix the winner's deposit.
* ``CommitExpertDraw(origin, client_seq, draw_id, lot_id, seed_hash, pool_hash)``
  and ``RevealExpertDraw(origin, client_seq, draw_id, seed_hex, drawn_hash)``
  (registry or staff origin; the engine checks ``seed_hash(seed_hex)``
  against the commitment like ``RevealDrawSeed``; events
  ``ExpertDrawCommitted`` / ``ExpertDrawRevealed``).  ``CommitDrawSeed`` does
  not fit: it is staff-only and its seed orders the lot's own tie-breaks.
  Until then draws live in the registry's store (``rg_draws``) with the seed
  hash, the pool and its hash, the seed and the result, never rewritten.
* ``ConfirmDeposit`` carrying ``payer_account`` (supervision's W-F1 needs it).
"""
