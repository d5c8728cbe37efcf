"""Theory of operation: ``pubex terminal``, a bidder's full-screen terminal.

Three layers, so the logic is testable without a screen or a server:

* Files: the key pair (``pubex keygen``), a small state file next to the key
  (the last ``client_seq`` used and the bids not yet acknowledged) and the
  JSON-lines receipts file (every acknowledged bid's ledger receipt).
* ``TerminalModel``: pure state -- lots from snapshots and events, own
  standing, pending bids, messages.  It never touches a socket; it queues the
  frames to send and the runner drains them.
* The runner (trio: connection with backoff, pinger) and a thin curses UI.

Safety of retries: ``client_seq`` is allocated and written to the state file
*before* a bid is sent, and only grows (never below the wall clock in us, so
a lost state file cannot rewind it).  A bid stays pending until its ``ack`` or
``error``; after a dropped connection (or a terminal restart) every pending bid
is resent with its SAME ``client_seq`` and the identical signed payload, and
the server answers a retry with the original outcome, never a second bid.

The modules: ``keys`` (the key pair, the state file and the receipts beside it),
``model`` (``TerminalModel``, formatting and the refusal wording) and ``screen``
(the runner and the curses UI; ``run_terminal`` starts both).
"""
