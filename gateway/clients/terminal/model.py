"""The terminal's pure state: lots, own standing, pending bids, messages, and the
wording of refusals.  It never touches a socket or a screen."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import time
from collections import deque
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

from nacl.signing import SigningKey

from gateway.clients.terminal.keys import ReceiptLog, SeqStore
from gateway.wire import protocol as p

CST = dt.timezone(dt.timedelta(hours=8), "CST")
NS = 1_000_000_000

# ---------------------------------------------------------------- formatting


def fmt_yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"{sign}¥{yuan:,}.{cents:02d}"


def parse_amount(text: str, unit: str) -> int:
    """Fen from a typed amount: unit "yuan" (up to 2 decimals) or "fen"."""
    clean = text.replace(",", "").replace("_", "").strip()
    try:
        value = Decimal(clean)
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    fen = value * 100 if unit == "yuan" else value
    if fen != fen.to_integral_value() or fen <= 0:
        raise ValueError(f"not a positive amount in whole fen: {text!r}")
    return int(fen)


def fmt_countdown(ns: int) -> str:
    s = max(0, ns) // NS
    h, rem = divmod(s, 3600)
    return f"{h:d}:{rem // 60:02d}:{rem % 60:02d}"


def fmt_clock(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns / NS, CST).strftime("%H:%M:%S")


# ---------------------------------------------------------- refusal wording

WORDING: dict[str, str] = {
    # engine: envelope
    "not_authorized": "无权执行此操作 / not authorised for this action",
    "client_seq_stale": "请求序号过旧，未提交 / stale client_seq: this bid was not placed",
    "invalid_origin": "来源无效 / invalid command origin",
    # engine: lot state
    "unknown_lot": "标的不存在 / no such lot",
    "lot_not_open": "竞价尚未开始 / the lot is not open for bidding",
    "lot_frozen": "标的已暂停 / the lot is suspended",
    "lot_closed": "竞价已结束 / the lot has closed",
    "quotes_frozen": "挂牌期末段暂停报价 / quotes are frozen before the listing closes",
    "phase_not_accepting": "当前阶段不接受出价 / this phase accepts no bids",
    "lot_exists": "标的编号已存在 / a lot with this id exists",
    "lot_not_frozen": "标的未暂停 / the lot is not suspended",
    "lot_not_draft": "标的已发布 / the lot is no longer a draft",
    # engine: eligibility
    "bidder_not_eligible": "无竞买资格（未报名或保证金未到账）/ not eligible: not registered or no deposit",
    "bidder_blacklisted": "竞买人已被禁止 / the bidder is blacklisted",
    "already_registered": "已报名 / already registered for this lot",
    "bidder_not_registered": "竞买人未报名 / the bidder is not registered for this lot",
    "deposit_already_confirmed": "保证金已确认 / deposit already confirmed",
    "deposit_insufficient": "保证金不足 / deposit below the lot's requirement",
    "not_blacklisted": "竞买人不在禁止名单 / the bidder is not blacklisted",
    # engine: amount
    "invalid_amount": "金额无效 / the amount must be positive",
    "bid_below_start": "出价低于起拍价 / below the start price",
    "bid_not_start_price": "首次出价须等于起拍价 / the first bid must equal the start price",
    "bid_below_increment": "出价低于加价幅度 / below the increment",
    "bid_not_increment_multiple": "出价须为加价幅度的整数倍 / not a multiple of the increment",
    "leader_may_not_outbid_self": "领先者不得自行加价 / the leader may not outbid itself",
    "priority_not_higher": "优先权不高于当前领先者 / priority not higher than the leader's",
    "stale_tick": "该价格轮次已过 / that clock tick has passed",
    "wrong_mechanism": "此标的不适用该操作 / not how this lot is traded",
    "no_sealed_bid": "未提交密封报价 / no sealed bid submitted",
    "reveal_mismatch": "解密内容与提交不符，报价无效 / reveal does not match: bid invalid",
    "already_revealed": "已解密 / already revealed",
    "invalid_commitment": "密封报价格式错误 / malformed sealed bid",
    "bid_above_ceiling": "报价高于最高限价 / quote above the ceiling",
    "quote_not_below_best": "报价须低于当前最低价一个降价幅度 / must beat the best quote by a step",
    "not_awarded": "未获授标 / the award is not yours",
    "tick_price_mismatch": "接受价格与当前报价不符 / the signed price is not this tick's price",
    "not_committee_for_lot": "评审专家须回避本项目 / a committee member may not score this lot",
    "invalid_scores": "评分无效 / invalid score",
    "scores_incomplete": "评分未完成 / not every member has scored every bid",
    "not_revival_candidate": "不在复活名单中 / not offered the revival price",
    "unknown_region": "地区无效 / unknown supply region",
    "not_a_winner": "非中选企业 / not a winner of this lot",
    "bidder_barred": "曾悔拍，不得参加再次拍卖 / defaulted earlier: barred from this re-auction",
    # engine: staff
    "invalid_terms": "拍卖条件无效 / invalid lot terms",
    "reserve_already_set": "保留价已设置 / the reserve is already set",
    "reserve_below_start": "保留价低于起拍价 / the reserve is below the start price",
    "reserve_cutoff_passed": "已过保留价设置截止时间 / too late to set the reserve",
    "increment_change_not_allowed": "不允许调整加价幅度 / the increment may not change",
    "freeze_too_close_to_end": "距结束太近，不能暂停 / too close to the end to suspend",
    "terminate_too_close_to_end": "距结束太近，不能终止 / too close to the end to terminate",
    "invalid_increment": "加价幅度无效 / invalid increment",
    "key_exists": "密钥编号已登记 / the key id is already registered",
    "seed_already_committed": "抽签种子已承诺 / the draw seed is already committed",
    "no_seed_committed": "未承诺抽签种子 / no draw seed was committed",
    "seed_mismatch": "种子与承诺不符 / the seed does not match its commitment",
    "too_late_for_seed": "已过承诺种子时限 / too late to commit a draw seed",
    "no_settlement_pending": "无待处理的成交后事项 / nothing awaits settlement",
    "reauction_not_allowed": "不符合再次拍卖条件 / this lot may not be re-auctioned so",
    "reauction_cut_too_deep": "降价幅度超过规定 / the start price is cut too deep",
    "complaint_exists": "该质疑编号已使用 / this complaint id is already used",
    "unknown_complaint": "质疑不存在 / no such complaint",
    "refund_not_due": "尚不能退还保证金 / the deposit is not refundable now",
    "deposit_already_settled": "保证金已处理 / the deposit was already refunded or forfeited",
    "draw_exists": "抽取编号已使用 / this draw id is already used",
    "unknown_draw": "抽取不存在 / no such expert draw",
    # engine: e-mall order book
    "book_invalid": "委托格式错误 / malformed order",
    "book_unknown_order": "委托不存在 / no such resting order of yours",
    "book_duplicate_id": "委托编号重复 / duplicate order id",
    "book_price_band": "价格超出涨跌幅限制 / price outside the band",
    "book_fok_unfillable": "无法全部成交，已拒绝 / fill-or-kill could not fill in full",
    "book_halted": "交易已暂停 / trading in this item is halted",
    "book_closed": "交易已收市 / trading in this item is closed",
    "book_purchase_limit": "超过单次采购限额 / above the single-purchase limit",
    "book_kind_not_allowed": "集合竞价阶段只接受限价委托 / only limit orders in the opening call",
    "book_not_call": "不在集合竞价阶段 / not in the opening call",
    "unknown_item": "商品不存在 / no such catalogue item",
    "item_exists": "商品编号已存在 / an item with this id exists",
    # runtime
    "storage_unavailable": "未能记账，请重试 / not recorded (storage unavailable), retry",
    "overloaded": "服务器繁忙，请稍后重试 / server busy, retry shortly",
    "outcome_unknown": "结果未知，将以同一序号重发 / outcome unknown: resent with the same client_seq",
    "sequencer_unavailable": "撮合服务暂不可用，请稍后重试 / sequencer unavailable, retry shortly",
    "command_failed": "指令未能执行，未记账 / the command could not be applied, nothing recorded",
    # gateway
    "malformed_json": "报文格式错误 / malformed JSON frame",
    "schema_violation": "报文字段错误 / frame does not match the protocol",
    "frame_too_large": "报文过大 / frame too large",
    "bad_signature": "签名无效 / the signature does not verify",
    "wrong_key": "签名密钥与连接不符 / payload key is not this connection's",
    "bad_domain": "签名域错误 / wrong signature domain",
    "rate_limited": "出价过于频繁 / too many bids, slow down",
    "unknown_key": "密钥未登记 / the key is not registered",
    "payload_ambiguous": "报文字段重复 / a key appears twice: the frame has two readings",
    "nesting_too_deep": "报文嵌套过深 / the frame nests too deep",
    "field_not_applicable": "签名内容含无关字段 / a signed field this action does not use",
    "too_many_refusals": "被拒指令过多，请稍候 / too many refused commands, wait a minute",
    "unknown_subscription": "订阅的标的不存在 / no such lot or item to subscribe to",
    "internal_error": "指令未能执行，未记账 / the command could not be applied, nothing recorded",
    "client_seq_reused": "序号已用于另一指令 / this client_seq belongs to another command",
}


def describe_error(code: int, name: str = "", detail: str = "") -> str:
    """``name (code): 中文 / English[: server detail]`` -- never just a number."""
    if not name:
        with contextlib.suppress(ValueError):
            name = p.error_name(code)
    words = WORDING.get(name, "未知错误 / unknown error")
    tail = f" ({detail})" if detail else ""
    return f"{name or 'error'} ({code}): {words}{tail}"


# ---------------------------------------------------------------- the model

LEADING, OUTBID, NOT_BIDDING = "领先 LEADING", "被超越 OUTBID", "未出价 not bidding"


@dataclasses.dataclass
class LotRow:
    lot: str
    title: str = ""
    status: str = "?"
    phase: str = ""
    price_fen: int = 0
    start_price_fen: int = 0
    increment_fen: int = 0
    leader_code: str = ""
    bid_count: int = 0
    start_ns: int = 0
    end_ns: int = 0
    result: str = ""
    seq: int = 0  # the last ledger seq folded in (older snapshots are ignored)
    known: bool = False  # a snapshot has arrived

    def next_bid_fen(self) -> int:
        """One increment above the current price (the start price before any bid)."""
        if not self.leader_code:
            return self.start_price_fen
        return self.price_fen + self.increment_fen


@dataclasses.dataclass
class Pending:
    client_seq: int
    lot: str
    amount_fen: int
    frame: str  # the signed frame: resent byte for byte


class TerminalModel:
    def __init__(
        self,
        key: SigningKey,
        key_id: str,
        lots: list[str],
        seqs: SeqStore,
        receipts: ReceiptLog,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.key, self.key_id = key, key_id
        self.wanted = list(lots)
        self.rows: dict[str, LotRow] = {lot: LotRow(lot) for lot in lots}
        self.selected = 0
        self.seqs, self.receipts, self.clock = seqs, receipts, clock
        self.codes: dict[str, str] = {}  # lot -> my bidder code
        self.bid_on: set[str] = receipts.lots()
        self.pending: dict[int, Pending] = {}
        self.unknown: set[int] = set()  # pending bids answered outcome_unknown
        self.unsent: list[int] = []
        self.acked_seqs: dict[int, str] = {}  # ledger seq of my accepted bids -> lot
        self.bid_codes: dict[int, str] = {}  # ledger seq -> bidder code of a BidAccepted
        self.messages: deque[str] = deque(maxlen=200)
        self.status = "connecting"
        self.connected = False
        self.offset_ns = 0  # server time - local time
        self.input = ""
        self.quit = False
        self._restore_pending()

    # ---------------------------------------------------------- helpers
    def say(self, text: str) -> None:
        self.messages.append(f"{fmt_clock(self.clock())} {text}")

    def server_now(self) -> int:
        return self.clock() + self.offset_ns

    def order(self) -> list[str]:
        return list(self.rows)

    def selected_lot(self) -> str | None:
        order = self.order()
        if not order:
            return None
        self.selected = min(self.selected, len(order) - 1)
        return order[self.selected]

    def move(self, delta: int) -> None:
        if self.rows:
            self.selected = (self.selected + delta) % len(self.rows)

    def _restore_pending(self) -> None:
        for cs, row in self.seqs.pending.items():
            frame = p.bid_frame(self.key, self.key_id, row["lot"], row["amount_fen"], cs)
            self.pending[cs] = Pending(cs, row["lot"], row["amount_fen"], frame)
            self.rows.setdefault(row["lot"], LotRow(row["lot"]))
        if self.pending:
            self.say(f"{len(self.pending)} bid(s) from a previous session await their outcome")

    # ---------------------------------------------------- own standing
    def standing(self, lot: str) -> str:
        row, code = self.rows.get(lot), self.codes.get(lot)
        if row is not None and code and row.leader_code == code:
            return LEADING
        if lot in self.bid_on:
            return OUTBID
        return NOT_BIDDING

    def countdown(self, row: LotRow) -> str:
        now = self.server_now()
        if row.status == "open" and row.end_ns:
            return f"ends in {fmt_countdown(row.end_ns - now)}"
        if row.status == "published" and row.start_ns:
            return f"opens in {fmt_countdown(row.start_ns - now)}"
        return row.result or "-"

    # ----------------------------------------------------- connection
    def subscriptions(self) -> list[str]:
        """The lots asked for, else those this key is registered on, else all."""
        return self.wanted or sorted(self.codes) or ["*"]

    def on_connected(self, hello: p.Hello, url: str) -> None:
        self.connected = True
        self.offset_ns = hello.server_time_ns - self.clock()
        self.codes.update(hello.codes)
        for lot in self.subscriptions():
            if lot != "*":
                self.rows.setdefault(lot, LotRow(lot))
        self.status = f"connected {url} as {hello.identity}"
        # Every pending bid goes again, oldest first, with its original client_seq.
        self.unsent = sorted(self.pending)
        if self.unsent:
            self.say(f"resending {len(self.unsent)} unacknowledged bid(s), same client_seq")
        self.say("connected")

    def on_disconnected(self, reason: str, retry_in_s: float) -> None:
        if self.connected:
            self.say(f"connection lost: {reason}")
        self.connected = False
        self.status = f"disconnected ({reason}); reconnecting in {retry_in_s:.1f}s"

    def take_unsent(self) -> list[str]:
        frames = [self.pending[cs].frame for cs in self.unsent if cs in self.pending]
        self.unsent = []
        return frames

    # ---------------------------------------------------------- bidding
    def place(self, lot: str, amount_fen: int) -> Pending:
        cs = self.seqs.allocate()
        bid = Pending(cs, lot, amount_fen, p.bid_frame(self.key, self.key_id, lot, amount_fen, cs))
        self.pending[cs] = bid
        self.seqs.pending[cs] = {"client_seq": cs, "lot": lot, "amount_fen": amount_fen}
        self.seqs.save()  # written before the frame can leave: a seq is never reused
        self.unsent.append(cs)
        where = "sending" if self.connected else "queued until reconnected"
        self.say(f"bid {lot} {fmt_yuan(amount_fen)} ({where}, client_seq {cs})")
        return bid

    def bid_increment(self) -> Pending | None:
        lot = self.selected_lot()
        row = self.rows.get(lot) if lot else None
        if lot is None or row is None or not row.known:
            self.say("no lot data yet: cannot compute the next bid")
            return None
        return self.place(lot, row.next_bid_fen())

    def _resolve(self, client_seq: int) -> Pending | None:
        bid = self.pending.pop(client_seq, None)
        if bid is not None:
            self.seqs.pending.pop(client_seq, None)
            self.seqs.save()
        return bid

    def on_ack(self, ack: p.Ack) -> None:
        bid = self._resolve(ack.client_seq)
        if bid is None:
            return  # a duplicate answer to a retry already settled
        self.receipts.append(
            {
                "seq": ack.seq,
                "entry_hash": ack.entry_hash,
                "ts_ns": ack.ts_ns,
                "receipt": ack.receipt,
                "proof": list(ack.proof),
                "lot": bid.lot,
                "amount_fen": bid.amount_fen,
                "client_seq": bid.client_seq,
            }
        )
        self.bid_on.add(bid.lot)
        self.acked_seqs[ack.seq] = bid.lot
        self._learn_code(ack.seq)
        retry = " (answer to a retry: the original bid, not a new one)" if ack.retried else ""
        self.say(
            f"✓ {bid.lot} {fmt_yuan(bid.amount_fen)} acknowledged, ledger seq {ack.seq}{retry}"
        )

    def on_error(self, err: p.Error) -> None:
        cs = err.client_seq
        unknown = err.code == p.GatewayError.outcome_unknown or (
            err.code == p.GatewayError.sequencer_unavailable and cs in self.unknown
        )
        if unknown and cs in self.pending:
            # It may be recorded: never dropped, sent again with the same
            # client_seq (a retry gets the original outcome) until answered.
            self.unknown.add(cs)
            if cs not in self.unsent:
                self.unsent.append(cs)
            bid = self.pending[cs]
            self.say(
                f"? {bid.lot} {fmt_yuan(bid.amount_fen)}: "
                f"{describe_error(err.code, err.name, err.message)}"
            )
            return
        self.unknown.discard(cs)
        bid = self._resolve(err.client_seq) if err.client_seq else None
        what = f"{bid.lot} {fmt_yuan(bid.amount_fen)} refused" if bid else "refused"
        self.say(f"✗ {what}: {describe_error(err.code, err.name, err.message)}")

    def _learn_code(self, seq: int) -> None:
        """An accepted bid's event names my code on that lot (if hello did not)."""
        lot, code = self.acked_seqs.get(seq), self.bid_codes.get(seq)
        if lot and code:
            self.codes.setdefault(lot, code)

    # ------------------------------------------------------------ feed
    def on_frame(self, frame: p.ServerFrame) -> None:
        if isinstance(frame, p.Ack):
            self.on_ack(frame)
        elif isinstance(frame, p.Error):
            self.on_error(frame)
        elif isinstance(frame, p.LotSnapshot):
            self.on_snapshot(frame)
        elif isinstance(frame, p.EventFrame):
            self.on_event(frame)
        elif isinstance(frame, p.Pong) and frame.t:
            # Half the round trip: the server read its clock about mid-way.
            self.offset_ns = frame.server_time_ns - (frame.t + self.clock()) // 2

    def on_snapshot(self, s: p.LotSnapshot) -> None:
        row = self.rows.setdefault(s.lot, LotRow(s.lot))
        # A conflated snapshot can arrive after a newer event: keep the newer.
        if row.known and s.seq < row.seq:
            return
        fields = ("title", "status", "phase", "price_fen", "start_price_fen", "increment_fen")
        for name in (*fields, "leader_code", "bid_count", "start_ns", "end_ns", "result", "seq"):
            setattr(row, name, getattr(s, name))
        row.known = True

    def on_event(self, f: p.EventFrame) -> None:
        row = self.rows.get(f.lot)
        if row is None or f.seq < row.seq:
            return
        row.seq = f.seq
        ev = f.event
        kind = ev.get("type")
        if kind == "bid_accepted":
            row.price_fen, row.leader_code = ev["amount_fen"], ev["bidder_code"]
            row.bid_count = ev["bid_no"]
            self.bid_codes[f.seq] = ev["bidder_code"]
            self._learn_code(f.seq)
        elif kind in ("lot_extended", "phase_changed", "lot_opened", "lot_resumed"):
            row.end_ns = ev.get("end_ns", row.end_ns)
            row.phase = ev.get("phase", row.phase)
            if kind == "lot_opened":
                row.status = "open"
            elif kind == "lot_resumed":
                row.status = "published" if row.phase == "pending" else "open"
                row.result = ""
        elif kind == "increment_changed" and ev.get("phase") == "main" and row.phase != "timed":
            row.increment_fen = ev["increment_fen"]
        elif kind in _FINAL_EVENTS:
            row.status = _FINAL_EVENTS[kind]
            row.result = str(ev.get("reason", row.result))

    # --------------------------------------------------------- commands
    def command(self, line: str) -> None:
        """One typed line (see KEYS_HELP)."""
        words = line.split()
        if not words:
            self.bid_increment()
            return
        head = words[0].lower()
        if head in ("q", "quit", "exit"):
            self.quit = True
        elif head == "+" and len(words) == 1:
            self.bid_increment()
        elif head in ("b", "f") and len(words) == 2:
            self._typed_bid(words[1], "yuan" if head == "b" else "fen")
        elif head.isdigit() and len(words) == 1:
            self._select_number(int(head))
        else:
            self.say(f"unknown command {line!r}: {KEYS_HELP}")

    def _typed_bid(self, text: str, unit: str) -> None:
        lot = self.selected_lot()
        if lot is None:
            self.say("no lot selected")
            return
        try:
            amount = parse_amount(text, unit)
        except ValueError as e:
            self.say(f"✗ {e}")
            return
        self.place(lot, amount)

    def _select_number(self, n: int) -> None:
        if 1 <= n <= len(self.rows):
            self.selected = n - 1
        else:
            self.say(f"no lot number {n}")


_FINAL_EVENTS = {
    "lot_frozen": "frozen",
    "lot_terminated": "terminated",
    "lot_sold": "sold",
    "lot_unsold": "unsold",
}

HELP_LINES = (
    "↑/↓ select lot · + or Enter (empty line): bid one increment above the price",
    "b N⏎ bid N 元 · f N⏎ bid N fen · 3⏎ select lot 3 · Esc clear · q⏎ quit",
)
KEYS_HELP = " · ".join(HELP_LINES)
