"""Supervision (监督, RULES.md §7): live lot monitoring and abnormal-trading
warnings computed from the ledger and the connection facts the gateway
ledgers with each command.

* ``model``      -- typed thresholds (``SupervisionConfig``), ``Alert``, watch state
* ``detectors``  -- the rules, pure and deterministic (W-D1, W-D2, W-D4, W-P1,
  W-P2, W-P4, W-B2, W-B3, W-B4, W-A1, W-A3, W-A4, W-O1)
* ``projection`` -- the follower projection storing alerts, handling records
  and lot monitoring in the service's own LMDB store; read-side queries
* ``service``    -- ``pubex supervise``: follows the ledger, serves the feed

Not yet computable from the ledger:

* W-F1 (deposits paid from one account): ``ConfirmDeposit`` carries no payer
  account.  It needs ``payer_account: str = ""`` on ``ConfirmDeposit`` (the
  registry's deposit confirmation); the detector is then a W-D4-style sharing
  table keyed by the account.
* Handling records (acknowledge / dismiss / escalate) must be ledgered: they
  need an engine command ``HandleAlert(origin, client_seq, lot_id, alert_key,
  action, note)`` (staff or supervisor origin; ``action`` one of acknowledge,
  dismiss, escalate; answered by an event ``AlertHandled(lot_id, alert_key,
  action)``).  The projection already reads it (``SupervisionProjection.
  _handling``) once the engine defines it.
"""
