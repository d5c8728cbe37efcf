"""Stable rejection codes.

A rejection is a business outcome, not an exception: it is an event with one
of these codes, ledgered like any other, so replay reproduces it.  Codes are
grouped by layer; a code's number and name are never reused or renumbered
(terminals match on them).  New codes are appended inside their group.

    1xx  command envelope (origin, authorisation, retries)
    2xx  lot state (unknown, not open, frozen, closed, phase)
    3xx  eligibility gate (registration, deposit, blacklist)
    4xx  bid amount (start, increment, self-outbid, priority)
    5xx  staff actions (terms, reserve, increment, freeze, terminate)
    6xx  e-mall order book (orders, sessions, items)
    9xx  runtime (storage) -- produced by the runtime, never by the engine
"""

from __future__ import annotations

from enum import IntEnum


class Reject(IntEnum):
    # 1xx envelope
    not_authorized = 101
    client_seq_stale = 102
    invalid_origin = 103
    client_seq_reused = 104  # the client_seq was used by another command of the session

    # 2xx lot state
    unknown_lot = 201
    lot_not_open = 202
    lot_frozen = 203
    lot_closed = 204
    quotes_frozen = 205
    phase_not_accepting = 206
    lot_exists = 207
    lot_not_frozen = 208
    lot_not_draft = 209

    # 3xx eligibility
    bidder_not_eligible = 301
    bidder_blacklisted = 302
    already_registered = 303
    bidder_not_registered = 304
    deposit_already_confirmed = 305
    deposit_insufficient = 306
    not_blacklisted = 307

    # 4xx bid amount
    invalid_amount = 401
    bid_below_start = 402
    bid_not_start_price = 403
    bid_below_increment = 404
    bid_not_increment_multiple = 405
    leader_may_not_outbid_self = 406
    priority_not_higher = 407
    stale_tick = 408
    wrong_mechanism = 409
    no_sealed_bid = 410
    reveal_mismatch = 411
    already_revealed = 412
    invalid_commitment = 413
    bid_above_ceiling = 414
    quote_not_below_best = 415
    not_awarded = 416
    tick_price_mismatch = 417  # a Dutch acceptance signed for another price than its tick's
    # 43x: draws, evaluation, procurement, settlement
    not_committee_for_lot = 430
    invalid_scores = 431
    scores_incomplete = 432
    not_revival_candidate = 433
    unknown_region = 434
    not_a_winner = 435
    bidder_barred = 436

    # 5xx staff actions
    invalid_terms = 501
    reserve_already_set = 502
    reserve_below_start = 503
    reserve_cutoff_passed = 504
    increment_change_not_allowed = 505
    freeze_too_close_to_end = 506
    terminate_too_close_to_end = 507
    invalid_increment = 508
    key_exists = 509
    # 53x: draws and after the hammer
    seed_already_committed = 530
    no_seed_committed = 531
    seed_mismatch = 532
    too_late_for_seed = 533
    no_settlement_pending = 534
    reauction_not_allowed = 535
    reauction_cut_too_deep = 536
    complaint_exists = 537
    unknown_complaint = 538
    refund_not_due = 539
    deposit_already_settled = 540
    draw_exists = 541
    unknown_draw = 542

    # 6xx e-mall order book (engine.book.BookReject: the same numbers and names)
    book_invalid = 601
    book_unknown_order = 602
    book_duplicate_id = 603
    book_price_band = 604
    book_fok_unfillable = 605
    book_halted = 606
    book_closed = 607
    book_purchase_limit = 608
    book_kind_not_allowed = 609
    book_not_call = 610
    unknown_item = 611
    item_exists = 612

    # 9xx runtime
    storage_unavailable = 901
    overloaded = 902
    command_failed = 903  # applying or storing it raised: refused alone, nothing recorded
