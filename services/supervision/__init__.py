"""Supervision (监督, RULES.md §7): live lot monitoring and abnormal-trading
warnings computed from the ledger and the connection facts the gateway
ledgers with each command.

* ``model``      -- typed thresholds (``SupervisionConfig``), ``Alert``, watch state
* ``detectors``  -- the rules, pure and deterministic (W-D1, W-D2, W-D4, W-F1,
  W-P1, W-P2, W-P4, W-B2, W-B3, W-B4, W-A1, W-A3, W-A4, W-O1)
* ``projection`` -- the follower projection storing alerts, handling records
  and lot monitoring in the service's own LMDB store; read-side queries
* ``service``    -- ``pubex supervise``: follows the ledger, serves the feed

Records from the ledger: handling decisions on alerts (``HandleAlert``:
acknowledge / dismiss / escalate, by staff or supervisors) and complaints
(``FileComplaint`` / ``AnswerComplaint``: text, answer deadline per RULES.md
§6.6, every step, the answer).  W-F1 reads ``ConfirmDeposit.payer_account``.

* ``playback``   -- ``pubex replay DIR --lot ID --html OUT``: one lot's
  self-contained report (price chart, bids, extensions, alerts, result)
"""
