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
* ``cli``        -- the arguments of ``pubex registry`` (its ``provision`` subcommand,
  bulk keys, registrations and deposits, runs from gateway/entry/provision.py)

Engine commands it uses (besides keys, registrations, deposits, blacklist,
payments and defaults):

* ``RefundDeposit`` (-> ``DepositRefunded``): the projection derives a refund
  due (``refund_due``, queued in ``rg_due``) from the ledgered close; the
  writer's outbox stores one intent per due refund with its client_seq
  (``rg_refund_cs``) before sending it; the deposit is ``refunded`` only once
  the ledger shows ``DepositRefunded``.  A refusal of the registry's own
  refund ends it ``refund_refused`` (``refund_not_due``: the derivation was
  wrong -- staff look; never resent); ``deposit_already_settled`` means it was
  already done.  ``ApplyDeposit`` is not needed: LotSold /
  SettlementChanged(paid) already fix the winner's deposit.
* ``CommitExpertDraw`` before a draw and ``RevealExpertDraw`` after it
  (-> ``ExpertDrawCommitted`` / ``ExpertDrawRevealed``, ``rg_ldraws``): each
  queued in the same txn as the draw record it carries, the reveal only once
  the commitment is accepted; ``experts.rerun_ledgered`` re-runs a draw from
  the ledgered seed and checks the ledgered hashes.

Engine command this service still needs:

* ``ConfirmDeposit`` carrying ``payer_account`` (supervision's W-F1 needs it).
"""
