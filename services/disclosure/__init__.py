"""Disclosure (信息公开, RULES.md §8): public notices and the published checkpoints.

``projection`` turns ledger entries into public notices (announcements, change,
freeze / resume / terminate notices, opening records, results with their
publicity deadline, unsold notices) and keeps what it must never publish
(bidder identities before the close) apart from what it serves;
``service`` is ``pubex disclose``: the follower, the checkpoint publisher and
the HTTP side (an HTML page and JSON feeds with ``since`` paging).
"""
