"""Theory of operation: the abnormal-trading detectors (RULES.md §7), pure.

:meth:`Detectors.apply` takes one decoded ledger entry (``seq``, ``ts_ns``,
``command``, ``events``, ``envelope`` -- the connection facts the gateway
ledgered with the command: role, identity, client IP, device fingerprint) and
returns the alerts it raises.  Everything it remembers lives in a
:class:`State` (in memory for tests and tools, the service's LMDB store in
the projection), so the same entries always give the same alerts, whether
the entries arrive in one run or across restarts.  No clock, no randomness,
no I/O; integer / ``Fraction`` arithmetic for every threshold.

When each rule is evaluated:

* as the command arrives (real time, ALERT / BLOCK):
  W-D1 (a second bidder acts on a lot from one IP), W-D2 (... from one device
  fingerprint), W-D4 (one public key registered for two bidders, or one
  device fingerprint used by two bidders anywhere), W-O1 (an organiser's
  freeze / terminate / reserve attempt within the window before the close,
  accepted or refused, and any attempt to set a reserve a second time);
* at a sealed opening (``OpeningRecord``): W-P1, W-P2, W-P4 over the valid
  amounts;
* as a deposit is confirmed with its payer account: W-F1 (BLOCK);
* at an award handed on (``AwardLapsed`` then ``AwardOffered``): W-B3; and for
  the ascending mechanisms at a winner's default after the hammer
  (``DepositForfeited`` of the winner: the runner-up related to it), and when
  the re-auction of a defaulted lot sells to a bidder related to the
  defaulter at a lower price;
* at the close (``LotSold`` / ``LotUnsold``): W-B2, W-B4, and for the
  ascending mechanisms W-A1, W-A3, W-A4 (statistical, post-trade).

"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from itertools import pairwise
from typing import Any, Protocol

from engine.messages import (
    AwardLapsed,
    AwardOffered,
    BidAccepted,
    BidderRegistered,
    ConfirmDeposit,
    CreateLot,
    CreateReauction,
    DepositConfirmed,
    DepositForfeited,
    FreezeLot,
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
    ReauctionCreated,
    RegisterBidder,
    RegisterKey,
    ReserveEntered,
    SealedBidReceived,
    SealedBidWithdrawn,
    SetReserve,
    TerminateLot,
)
from services.supervision.model import (
    ALERT,
    BLOCK,
    PPM,
    WATCH,
    Alert,
    BidderRecord,
    BidderWatch,
    LotWatch,
    Sharing,
    SupervisionConfig,
    make_alert,
)

ASCENDING = frozenset({"english", "listing"})
BIDDER_ROLE = "bidder"
# Organiser actions W-O1 watches (accepted or refused: an attempt counts).
_LOT_ORGANISER_ACTIONS = (FreezeLot, TerminateLot, SetReserve)


class EntryLike(Protocol):
    """What the detectors read of a ledger entry (``services.follower.Entry``)."""

    @property
    def seq(self) -> int: ...
    @property
    def ts_ns(self) -> int: ...
    @property
    def command(self) -> Any: ...
    @property
    def events(self) -> Sequence[Any]: ...
    @property
    def envelope(self) -> Any: ...  # role, identity, ip, fingerprint; or None


class State(Protocol):
    """Where the detectors keep what they remember (read, then written back)."""

    def lot(self, lot_id: str) -> LotWatch | None: ...
    def put_lot(self, lot: LotWatch) -> None: ...
    def sharing(self, kind: str, key: str) -> Sharing | None: ...
    def put_sharing(self, kind: str, key: str, value: Sharing) -> None: ...
    def bidder(self, bidder_id: str) -> BidderRecord | None: ...
    def put_bidder(self, bidder_id: str, value: BidderRecord) -> None: ...


class MemoryState:
    """A :class:`State` in dicts (tests, one-shot tools)."""

    def __init__(self) -> None:
        self.lots: dict[str, LotWatch] = {}
        self.shared: dict[tuple[str, str], Sharing] = {}
        self.bidders: dict[str, BidderRecord] = {}

    def lot(self, lot_id: str) -> LotWatch | None:
        return self.lots.get(lot_id)

    def put_lot(self, lot: LotWatch) -> None:
        self.lots[lot.lot_id] = lot

    def sharing(self, kind: str, key: str) -> Sharing | None:
        return self.shared.get((kind, key))

    def put_sharing(self, kind: str, key: str, value: Sharing) -> None:
        self.shared[(kind, key)] = value

    def bidder(self, bidder_id: str) -> BidderRecord | None:
        return self.bidders.get(bidder_id)

    def put_bidder(self, bidder_id: str, value: BidderRecord) -> None:
        self.bidders[bidder_id] = value


def _bidder_of(origin: str) -> str:
    kind, _, ident = origin.partition(":")
    return ident if kind == BIDDER_ROLE else ""


def _append_capped(seqs: list[int], seq: int, cap: int) -> None:
    if len(seqs) < cap:
        seqs.append(seq)


class Detectors:
    def __init__(self, config: SupervisionConfig | None = None) -> None:
        self.config = config or SupervisionConfig()

    # ------------------------------------------------------------------ entry
    def apply(self, entry: EntryLike, state: State) -> list[Alert]:
        out: list[Alert] = []
        cmd = entry.command
        seq, ts = entry.seq, entry.ts_ns
        touched: dict[str, LotWatch] = {}
        lot_id = getattr(cmd, "lot_id", "")
        env = entry.envelope
        if lot_id and env is not None:
            lot = state.lot(lot_id)
            if lot is not None and self._connection(lot, cmd, env, seq, ts, state, out):
                touched[lot_id] = lot
        if lot_id and isinstance(cmd, _LOT_ORGANISER_ACTIONS) and not _bidder_of(cmd.origin):
            lot = touched.get(lot_id) or state.lot(lot_id)
            if lot is not None and self._organiser(lot, cmd, seq, ts, out):
                touched[lot_id] = lot
        for ev in entry.events:
            lot_of_event = self._event(ev, cmd, seq, ts, state, touched, out)
            if lot_of_event is not None:
                touched[lot_of_event.lot_id] = lot_of_event
        for a in out:
            lot = touched.get(a.lot_id)
            if lot is not None:
                lot.alerts += 1
        for lot in touched.values():
            lot.last_seq = seq
            state.put_lot(lot)
        return out

    # ------------------------------------------------- connection facts (D1/D2/D4)
    def _connection(
        self,
        lot: LotWatch,
        cmd: Any,
        env: Any,
        seq: int,
        ts: int,
        state: State,
        out: list[Alert],
    ) -> bool:
        """Record who acted on the lot from where; True when the lot changed."""
        cfg = self.config
        bidder_id = _bidder_of(cmd.origin)
        changed = False
        if env.role != BIDDER_ROLE or not bidder_id:
            if env.role in ("staff", "supervisor", "service"):
                if env.ip and env.ip not in lot.staff_ips:
                    lot.staff_ips[env.ip] = seq
                    changed = True
                if env.fingerprint and env.fingerprint not in lot.staff_devices:
                    lot.staff_devices[env.fingerprint] = seq
                    changed = True
            return changed
        if env.ip and env.ip not in cfg.d1_ip_whitelist:
            users = lot.ips.setdefault(env.ip, {})
            if bidder_id not in users:
                users[bidder_id] = seq
                changed = True
                if len(users) >= cfg.d1_min_bidders:
                    out.append(
                        make_alert(
                            "W-D1",
                            ALERT,
                            lot.lot_id,
                            seq,
                            ts,
                            f"ip:{env.ip}:{len(users)}",
                            users.values(),
                            sorted(users),
                            f"{len(users)} bidders on lot {lot.lot_id} from IP {env.ip}",
                            cfg.evidence_max,
                        )
                    )
        if env.fingerprint:
            users = lot.devices.setdefault(env.fingerprint, {})
            if bidder_id not in users:
                users[bidder_id] = seq
                changed = True
                if len(users) >= cfg.d2_min_bidders:
                    out.append(
                        make_alert(
                            "W-D2",
                            BLOCK,
                            lot.lot_id,
                            seq,
                            ts,
                            f"device:{env.fingerprint}:{len(users)}",
                            users.values(),
                            sorted(users),
                            f"{len(users)} bidders on lot {lot.lot_id} from device "
                            f"{env.fingerprint}",
                            cfg.evidence_max,
                        )
                    )
            self._shared(state, "device", env.fingerprint, bidder_id, seq, ts, "login device", out)
        return changed

    def _shared(
        self,
        state: State,
        kind: str,
        key: str,
        bidder_id: str,
        seq: int,
        ts: int,
        what: str,
        out: list[Alert],
    ) -> None:
        """W-D4: one key / device used by several bidders anywhere on the platform."""
        share = state.sharing(kind, key)
        if share is None:
            share = Sharing()
        if bidder_id in share.users:
            return
        share.users[bidder_id] = seq
        state.put_sharing(kind, key, share)
        n = len(share.users)
        if n >= self.config.d4_min_bidders:
            out.append(
                make_alert(
                    "W-D4",
                    BLOCK,
                    "",
                    seq,
                    ts,
                    f"{kind}:{key}:{n}",
                    share.users.values(),
                    sorted(share.users),
                    f"{n} bidders share one {what} ({key[:16]})",
                    self.config.evidence_max,
                )
            )

    # ----------------------------------------------------------- W-O1
    def _organiser(self, lot: LotWatch, cmd: Any, seq: int, ts: int, out: list[Alert]) -> bool:
        if lot.status in ("sold", "unsold", "terminated") or lot.status == "draft":
            return False
        cfg = self.config
        kind = type(cmd).__name__
        raised = False
        if isinstance(cmd, SetReserve) and lot.reserve_seq:
            out.append(
                make_alert(
                    "W-O1",
                    BLOCK,
                    lot.lot_id,
                    seq,
                    ts,
                    "reserve-edit",
                    (lot.reserve_seq, seq),
                    (),
                    f"{cmd.origin}: reserve edit attempted after the reserve was entered",
                    cfg.evidence_max,
                )
            )
            raised = True
        remaining = lot.end_ns - ts
        if 0 <= remaining <= cfg.o1_window_ns:
            out.append(
                make_alert(
                    "W-O1",
                    BLOCK,
                    lot.lot_id,
                    seq,
                    ts,
                    f"near-close:{kind}",
                    (seq,),
                    (),
                    f"{cmd.origin}: {kind} {remaining // 1_000_000_000} s before the close",
                    cfg.evidence_max,
                )
            )
            raised = True
        return raised

    # ----------------------------------------------------------- events
    def _event(
        self,
        ev: Any,
        cmd: Any,
        seq: int,
        ts: int,
        state: State,
        touched: dict[str, LotWatch],
        out: list[Alert],
    ) -> LotWatch | None:
        t = type(ev)
        if t is KeyRegistered:
            if isinstance(cmd, RegisterKey):
                self._shared(
                    state,
                    "key",
                    cmd.public_key_hex.lower(),
                    cmd.bidder_id,
                    seq,
                    ts,
                    "public key",
                    out,
                )
            return None
        if t is LotCreated:
            if not isinstance(cmd, CreateLot | CreateReauction):
                return None
            return LotWatch(
                ev.lot_id,
                ev.mechanism,
                ev.title,
                ev.start_price_fen,
                ev.increment_fen,
                ev.timed_increment_fen,
                ev.start_ns,
                ev.end_ns,
                seq,
                rules_name=ev.rules.name,
            )
        lot_id = getattr(ev, "lot_id", "")
        if not lot_id:
            return None
        lot = touched.get(lot_id) or state.lot(lot_id)
        if lot is None:
            return None
        if t is BidAccepted:
            self._bid(lot, ev, seq, ts)
        elif t is LotExtended:
            lot.end_ns = ev.end_ns
        elif t is LotOpened:
            lot.status, lot.phase, lot.end_ns = "open", ev.phase, ev.end_ns
            lot.opened_ns = ev.at_ns
        elif t is PhaseChanged:
            lot.phase, lot.end_ns = ev.phase, ev.end_ns
        elif t is BidderRegistered:
            if isinstance(cmd, RegisterBidder):
                lot.bidders[ev.bidder_code] = BidderWatch(cmd.bidder_id, ev.bidder_code, seq)
                lot.ids[cmd.bidder_id] = ev.bidder_code
        elif t is DepositConfirmed:
            b = lot.bidders.get(ev.bidder_code)
            if b is not None:
                b.deposit_seq = seq
                if isinstance(cmd, ConfirmDeposit) and cmd.payer_account:
                    self._payer(lot, b, cmd.payer_account, seq, ts, out)
        elif t is DepositForfeited:
            self._default(lot, ev, seq, ts, out)
        elif t is ReauctionCreated:
            lot.parent_lot_id = ev.parent_lot_id
        elif t is SealedBidReceived:
            b = lot.bidders.get(ev.bidder_code)
            if b is not None:
                b.sealed_seq, b.withdraw_seq = seq, 0
        elif t is SealedBidWithdrawn:
            b = lot.bidders.get(ev.bidder_code)
            if b is not None:
                b.sealed_seq, b.withdraw_seq = 0, seq
        elif t is OpeningRecord:
            self._opening(lot, ev, seq, ts, out)
        elif t is AwardLapsed:
            lot.lapsed_code, lot.lapsed_seq = ev.bidder_code, seq
        elif t is AwardOffered:
            self._award(lot, ev, seq, ts, out)
        elif t is LotSold or t is LotUnsold:
            self._close(lot, ev, seq, ts, state, out)
        elif t is LotTerminated:
            lot.status, lot.closed_seq, lot.closed_ns = "terminated", seq, ev.at_ns
        elif t is LotPublished:
            lot.status, lot.end_ns = "published", ev.end_ns
        elif t is LotFrozen:
            lot.status = "frozen"
        elif t is LotResumed:
            lot.status, lot.phase, lot.end_ns = "open", ev.phase, ev.end_ns
        elif t is IncrementChanged:
            if ev.phase == "timed":
                lot.timed_increment_fen = ev.increment_fen
            else:
                lot.increment_fen = ev.increment_fen
        elif t is ReserveEntered:
            lot.reserve_seq = lot.reserve_seq or seq
        else:
            return None
        return lot

    def _increment(self, lot: LotWatch) -> int:
        if lot.phase == "timed" and lot.timed_increment_fen:
            return lot.timed_increment_fen
        return lot.increment_fen

    def _bid(self, lot: LotWatch, ev: BidAccepted, seq: int, ts: int) -> None:
        cap = self.config.evidence_max
        b = lot.bidders.get(ev.bidder_code)
        if b is None:  # cannot happen for a ledger the engine wrote
            return
        if lot.leader_code == ev.bidder_code and lot.mechanism in ASCENDING:
            b.self_raises += 1
            _append_capped(b.self_raise_seqs, seq, cap)
            if ev.amount_fen - lot.price_fen == self._increment(lot):
                b.min_self_raises += 1
        remaining = lot.end_ns - ts
        if lot.mechanism in ASCENDING and 0 <= remaining <= self.config.a4_window_ns:
            b.snipes += 1
            _append_capped(b.snipe_seqs, seq, cap)
        if not b.bids:
            b.first_bid_ns = ts
        b.bids += 1
        b.last_bid_ns, b.last_bid_seq, b.last_amount_fen = ts, seq, ev.amount_fen
        _append_capped(b.bid_seqs, seq, cap)
        lot.price_fen, lot.leader_code = ev.amount_fen, ev.bidder_code
        lot.bid_count += 1

    # --------------------------------------------------- W-P1 / W-P2 / W-P4
    def _opening(
        self, lot: LotWatch, ev: OpeningRecord, seq: int, ts: int, out: list[Alert]
    ) -> None:
        cfg = self.config
        lot.opening_seq = seq
        valid = [(e.bidder_code, e.amount_fen) for e in ev.entries if e.valid and e.amount_fen > 0]
        lot.valid_codes = [c for c, _ in valid]

        def ids_and_seqs(codes: list[str]) -> tuple[list[str], list[int]]:
            bs = [lot.bidders[c] for c in codes if c in lot.bidders]
            return [b.bidder_id for b in bs], [b.sealed_seq or b.registered_seq for b in bs] + [seq]

        by_amount: dict[int, list[str]] = {}
        for code, amount in valid:
            by_amount.setdefault(amount, []).append(code)
        for amount, codes in sorted(by_amount.items()):
            if len(codes) >= cfg.p1_min_bidders:
                ids, seqs = ids_and_seqs(codes)
                out.append(
                    make_alert(
                        "W-P1",
                        ALERT,
                        lot.lot_id,
                        seq,
                        ts,
                        f"amount:{amount}",
                        seqs,
                        ids,
                        f"{len(codes)} bidders quoted exactly {amount} fen",
                        cfg.evidence_max,
                    )
                )
        codes = [c for c, _ in valid]
        amounts = [a for _, a in valid]
        ladder = price_ladder(amounts, cfg.p2_min_bids, cfg.p2_max_deviation_ppm)
        if ladder:
            ids, seqs = ids_and_seqs(codes)
            out.append(
                make_alert(
                    "W-P2",
                    ALERT,
                    lot.lot_id,
                    seq,
                    ts,
                    ladder,
                    seqs,
                    ids,
                    f"valid amounts form an {ladder} ladder: {sorted(amounts)}",
                    cfg.evidence_max,
                )
            )
        if price_cluster(
            amounts, cfg.p4_min_bids, cfg.p4_band_ppm, cfg.p4_share_ppm, cfg.p4_max_band_ppm
        ):
            ids, seqs = ids_and_seqs(codes)
            out.append(
                make_alert(
                    "W-P4",
                    ALERT,
                    lot.lot_id,
                    seq,
                    ts,
                    "cluster",
                    seqs,
                    ids,
                    f"valid amounts cluster around their mean: {sorted(amounts)}",
                    cfg.evidence_max,
                )
            )

    # ------------------------------------------------------------- W-F1
    def _payer(
        self, lot: LotWatch, b: BidderWatch, account: str, seq: int, ts: int, out: list[Alert]
    ) -> None:
        """W-F1: deposits of several bidders on one lot paid from one account."""
        key = account_key(account)
        if not key:
            return
        users = lot.payers.setdefault(key, {})
        if b.bidder_id in users:
            return
        users[b.bidder_id] = seq
        if len(users) < self.config.f1_min_bidders:
            return
        out.append(
            make_alert(
                "W-F1",
                BLOCK,
                lot.lot_id,
                seq,
                ts,
                f"payer:{len(users)}",
                users.values(),
                sorted(users),
                f"deposits of {len(users)} bidders on lot {lot.lot_id} paid from one account "
                f"(…{key[-4:]})",
                self.config.evidence_max,
            )
        )

    # ------------------------------------------------------------- W-B3
    def _default(
        self, lot: LotWatch, ev: DepositForfeited, seq: int, ts: int, out: list[Alert]
    ) -> None:
        """A winner that defaults after the hammer (悔拍, R-5.2.6) on an ascending
        lot: W-B3 when the next-ranked bidder is related to it (it takes the lot
        at a worse price in the re-auction, or by being the runner-up)."""
        if lot.mechanism not in ASCENDING or lot.status != "sold":
            return
        if ev.bidder_code != lot.winner_code or lot.defaulted_code:
            return
        lot.defaulted_code, lot.defaulted_seq = ev.bidder_code, seq
        lot.defaulted_price_fen = lot.price_fen
        defaulter = lot.bidders.get(ev.bidder_code)
        if defaulter is None:
            return
        others = [b for c, b in lot.bidders.items() if b.bids and c != ev.bidder_code]
        if not others:
            return
        runner = max(others, key=lambda b: (b.last_amount_fen, -b.last_bid_seq))
        links = related(lot, defaulter.bidder_id, runner.bidder_id)
        if self.config.b3_require_related and not links:
            return
        out.append(
            make_alert(
                "W-B3",
                ALERT,
                lot.lot_id,
                seq,
                ts,
                runner.bidder_id,
                [seq, defaulter.last_bid_seq, runner.last_bid_seq, *links.values()],
                (defaulter.bidder_id, runner.bidder_id),
                f"{ev.bidder_code} defaulted at {lot.price_fen} fen ({ev.reason}); the "
                f"next-ranked {runner.code} bid {runner.last_amount_fen} fen"
                + (f" (related: {', '.join(sorted(links))})" if links else ""),
                self.config.evidence_max,
            )
        )

    def _reauction_sold(
        self, lot: LotWatch, ev: LotSold, seq: int, ts: int, state: State, out: list[Alert]
    ) -> None:
        """W-B3 completed: a re-auction of a defaulted lot sold to a bidder related
        to the defaulter, at a lower price than the defaulted one."""
        parent = state.lot(lot.parent_lot_id)
        if parent is None or not parent.defaulted_code:
            return
        defaulter = parent.bidders.get(parent.defaulted_code)
        taker = lot.bidders.get(ev.bidder_code)
        if defaulter is None or taker is None or ev.price_fen >= parent.defaulted_price_fen:
            return
        links = {
            **related(parent, defaulter.bidder_id, taker.bidder_id),
            **related(lot, defaulter.bidder_id, taker.bidder_id),
        }
        if self.config.b3_require_related and not links:
            return
        out.append(
            make_alert(
                "W-B3",
                ALERT,
                lot.lot_id,
                seq,
                ts,
                taker.bidder_id,
                [parent.defaulted_seq, defaulter.last_bid_seq, *taker.bid_seqs, *links.values()],
                (defaulter.bidder_id, taker.bidder_id),
                f"{parent.lot_id}: {parent.defaulted_code} defaulted at "
                f"{parent.defaulted_price_fen} fen; the re-auction sells to {ev.bidder_code} "
                f"at {ev.price_fen} fen"
                + (f" (related: {', '.join(sorted(links))})" if links else ""),
                self.config.evidence_max,
            )
        )

    def _award(self, lot: LotWatch, ev: AwardOffered, seq: int, ts: int, out: list[Alert]) -> None:
        prev_code, prev_price = lot.lapsed_code, lot.price_fen
        lot.leader_code, lot.price_fen = ev.bidder_code, ev.price_fen
        if ev.rank <= 1 or not prev_code:
            return
        lapsed = lot.bidders.get(prev_code)
        taker = lot.bidders.get(ev.bidder_code)
        if lapsed is None or taker is None:
            return
        # Reverse competition: a worse price is a higher one.
        worse = (
            ev.price_fen > prev_price if lot.mechanism == "reverse" else ev.price_fen < prev_price
        )
        if not worse:
            return
        links = related(lot, lapsed.bidder_id, taker.bidder_id)
        if self.config.b3_require_related and not links:
            return
        out.append(
            make_alert(
                "W-B3",
                ALERT,
                lot.lot_id,
                seq,
                ts,
                taker.bidder_id,
                [lot.lapsed_seq, lapsed.last_bid_seq, taker.last_bid_seq, *links.values()],
                (lapsed.bidder_id, taker.bidder_id),
                f"{prev_code} gave up the award at {prev_price} fen; {ev.bidder_code} "
                f"takes it at {ev.price_fen} fen"
                + (f" (related: {', '.join(sorted(links))})" if links else ""),
                self.config.evidence_max,
            )
        )

    # --------------------------------------------- close: B2 / B4 / A1 / A3 / A4
    def _close(
        self, lot: LotWatch, ev: Any, seq: int, ts: int, state: State, out: list[Alert]
    ) -> None:
        sold = type(ev) is LotSold
        lot.status = "sold" if sold else "unsold"
        lot.closed_seq, lot.closed_ns = seq, ev.closed_at_ns
        lot.winner_code = ev.bidder_code if sold else ""
        if sold:
            lot.price_fen, lot.leader_code = ev.price_fen, ev.bidder_code
        if lot.mechanism == "sealed":
            participants = [c for c in lot.valid_codes if c in lot.bidders]
        else:
            participants = [c for c, b in lot.bidders.items() if b.bids]
        self._collective_withdrawal(lot, participants, seq, ts, out)
        if sold:
            self._single_bidder(lot, ev, participants, seq, ts, out)
            if lot.parent_lot_id:
                self._reauction_sold(lot, ev, seq, ts, state, out)
        for code in participants:
            b = lot.bidders[code]
            rec = state.bidder(b.bidder_id) or BidderRecord()
            rec.lots += 1
            rec.wins += code == lot.winner_code
            state.put_bidder(b.bidder_id, rec)
        if lot.mechanism in ASCENDING:
            self._shill(lot, participants, seq, ts, state, out)
            self._self_raising(lot, seq, ts, out)
            self._last_second(lot, seq, ts, out)

    def _collective_withdrawal(
        self, lot: LotWatch, participants: list[str], seq: int, ts: int, out: list[Alert]
    ) -> None:
        """W-B2: deposited bidders that never quoted / withdrew / did not decrypt."""
        if lot.mechanism == "dutch":  # only the one acceptance ever bids
            return
        cfg = self.config
        quoted = set(participants)
        gone = [b for c, b in lot.bidders.items() if b.deposit_seq and c not in quoted]
        if len(gone) < cfg.b2_min_abandoners or len(quoted) >= cfg.b2_remaining_below:
            return
        evidence = [seq]
        for b in gone:
            evidence += [b.deposit_seq, b.withdraw_seq, b.sealed_seq]
        out.append(
            make_alert(
                "W-B2",
                ALERT,
                lot.lot_id,
                seq,
                ts,
                "collective",
                evidence,
                [b.bidder_id for b in gone],
                f"{len(gone)} deposited bidders did not compete, leaving {len(quoted)}",
                cfg.evidence_max,
            )
        )

    def _single_bidder(
        self,
        lot: LotWatch,
        ev: LotSold,
        participants: list[str],
        seq: int,
        ts: int,
        out: list[Alert],
    ) -> None:
        """W-B4: sold at the start price to the only bidder of >= 2 registered."""
        if len(participants) != 1 or ev.price_fen != lot.start_price_fen:
            return
        if len(lot.bidders) < self.config.b4_min_registered:
            return
        b = lot.bidders[participants[0]]
        out.append(
            make_alert(
                "W-B4",
                WATCH,
                lot.lot_id,
                seq,
                ts,
                b.bidder_id,
                [seq, *b.bid_seqs, b.sealed_seq],
                (b.bidder_id,),
                f"sold at the start price {ev.price_fen} fen to the only bidder of "
                f"{len(lot.bidders)} registered",
                self.config.evidence_max,
            )
        )

    def _shill(
        self,
        lot: LotWatch,
        participants: list[str],
        seq: int,
        ts: int,
        state: State,
        out: list[Alert],
    ) -> None:
        """W-A1: the UCI shill-bidding features, scored per losing bidder."""
        cfg = self.config
        start = lot.opened_ns or lot.start_ns
        duration = lot.closed_ns - start
        if duration <= 0 or not lot.bid_count:
            return
        for code in participants:
            if code == lot.winner_code:
                continue
            b = lot.bidders[code]
            rec = state.bidder(b.bidder_id) or BidderRecord()
            tests = (
                (
                    "bidding_ratio",
                    cfg.a1_w_bidding_ratio,
                    b.bids * PPM >= lot.bid_count * cfg.a1_bidding_ratio_ppm,
                ),
                (
                    "successive_outbidding",
                    cfg.a1_w_successive,
                    b.min_self_raises >= cfg.a1_successive_min,
                ),
                # No bid in the last share of the duration.
                (
                    "inactive_at_end",
                    cfg.a1_w_not_last,
                    (b.last_bid_ns - start) * PPM < duration * (PPM - cfg.a1_last_share_ppm),
                ),
                (
                    "early_bidding",
                    cfg.a1_w_early,
                    (b.first_bid_ns - start) * PPM < duration * cfg.a1_early_share_ppm,
                ),
                (
                    "low_win_ratio",
                    cfg.a1_w_low_win,
                    rec.lots > 0 and rec.wins * PPM <= rec.lots * cfg.a1_low_win_ppm,
                ),
                ("many_bids", cfg.a1_w_many_bids, lot.bid_count >= cfg.a1_many_bids),
            )
            features = [name for name, weight, on in tests if on and weight]
            score = sum(weight for _, weight, on in tests if on)
            if score < cfg.a1_threshold:
                continue
            links = organiser_links(lot, b.bidder_id)
            level = BLOCK if links else ALERT
            out.append(
                make_alert(
                    "W-A1",
                    level,
                    lot.lot_id,
                    seq,
                    ts,
                    b.bidder_id,
                    [*b.bid_seqs, *links.values()],
                    (b.bidder_id,),
                    f"shill score {score} >= {cfg.a1_threshold}: {', '.join(features)}"
                    + (f"; linked to the organiser by {', '.join(sorted(links))}" if links else ""),
                    cfg.evidence_max,
                )
            )

    def _self_raising(self, lot: LotWatch, seq: int, ts: int, out: list[Alert]) -> None:
        cfg = self.config
        for b in lot.bidders.values():
            if b.self_raises >= cfg.a3_min_self_raises:
                out.append(
                    make_alert(
                        "W-A3",
                        WATCH,
                        lot.lot_id,
                        seq,
                        ts,
                        b.bidder_id,
                        b.self_raise_seqs,
                        (b.bidder_id,),
                        f"{b.code} raised its own leading bid {b.self_raises} times",
                        cfg.evidence_max,
                    )
                )

    def _last_second(self, lot: LotWatch, seq: int, ts: int, out: list[Alert]) -> None:
        cfg = self.config
        snipers = [b for b in lot.bidders.values() if b.snipes]
        total = sum(b.snipes for b in snipers)
        if total < cfg.a4_min_snipes or len(snipers) > cfg.a4_max_codes:
            return
        evidence = [s for b in snipers for s in b.snipe_seqs]
        out.append(
            make_alert(
                "W-A4",
                WATCH,
                lot.lot_id,
                seq,
                ts,
                "+".join(b.code for b in snipers),
                evidence,
                [b.bidder_id for b in snipers],
                f"{total} bids in the last {cfg.a4_window_ns // 1_000_000_000} s of their "
                f"window, all from {', '.join(b.code for b in snipers)}",
                cfg.evidence_max,
            )
        )


# ---------------------------------------------------------------- pure helpers


def account_key(account: str) -> str:
    """A payer account compared without spaces, dashes or case."""
    return "".join(ch for ch in account if ch.isalnum()).upper()


def related(lot: LotWatch, a: str, b: str) -> dict[str, int]:
    """Connection facts two bidders share on a lot: {"ip:X"|"device:Y": seq}."""
    links: dict[str, int] = {}
    for kind, table in (("ip", lot.ips), ("device", lot.devices)):
        for key, users in table.items():
            if a in users and b in users:
                links[f"{kind}:{key}"] = max(users[a], users[b])
    return links


def organiser_links(lot: LotWatch, bidder_id: str) -> dict[str, int]:
    """IPs / devices a bidder shares with staff acting on the lot."""
    links: dict[str, int] = {}
    for kind, table, staff in (
        ("ip", lot.ips, lot.staff_ips),
        ("device", lot.devices, lot.staff_devices),
    ):
        for key, users in table.items():
            if bidder_id in users and key in staff:
                links[f"{kind}:{key}"] = users[bidder_id]
    return links


def _max_rel_deviation_ok(values: list[Fraction], ppm: int) -> bool:
    """max |v - mean| <= mean * ppm / 1e6 (mean > 0)."""
    mean = sum(values, Fraction(0)) / len(values)
    if mean <= 0:
        return False
    worst = max(abs(v - mean) for v in values)
    return worst * PPM <= mean * ppm


def price_ladder(amounts: list[int], min_bids: int, max_deviation_ppm: int) -> str:
    """W-P2: "arithmetic" / "geometric" when the sorted distinct amounts step
    regularly (max relative deviation of the differences, or of the growth
    rates a[i+1]/a[i] - 1, within ``max_deviation_ppm``); else ""."""
    if len(amounts) < min_bids:
        return ""
    xs = sorted(amounts)
    if any(x <= 0 for x in xs) or len(set(xs)) != len(xs):
        return ""  # equal amounts are W-P1's
    diffs = [Fraction(b - a) for a, b in pairwise(xs)]
    if _max_rel_deviation_ok(diffs, max_deviation_ppm):
        return "arithmetic"
    growth = [Fraction(b, a) - 1 for a, b in pairwise(xs)]
    if _max_rel_deviation_ok(growth, max_deviation_ppm):
        return "geometric"
    return ""


def price_cluster(
    amounts: list[int], min_bids: int, band_ppm: int, share_ppm: int, max_band_ppm: int
) -> bool:
    """W-P4: every amount within +-band of the mean, or at least ``share`` of
    them within it and none beyond ``max_band``."""
    n = len(amounts)
    if n < min_bids:
        return False
    mean = Fraction(sum(amounts), n)
    if mean <= 0:
        return False
    devs = [abs(a - mean) for a in amounts]
    within = sum(1 for d in devs if d * PPM <= mean * band_ppm)
    if within == n:
        return True
    return within * PPM >= n * share_ppm and all(d * PPM < mean * max_band_ppm for d in devs)
