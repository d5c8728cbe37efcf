"""A small market for the supervision tests: drives the real engine (Router +
Journal) into a real LMDB ledger, each command with the envelope the gateway
would ledger (role, identity, client IP, device fingerprint), deadlines fired
with ledgered Ticks exactly as the harness does."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from engine.messages import (
    Command,
    ConfirmDeposit,
    CreateLot,
    Event,
    PublishLot,
    RegisterBidder,
    RegisterKey,
    Tick,
)
from engine.router import Router
from engine.rules import RuleSet
from gateway.sequencer.journal import Journal
from ledger.record import Envelope, encode_envelope
from ledger.store import LedgerStore
from persistence.service import ServiceStore
from services.follower import Follower
from services.supervision.model import Alert, SupervisionConfig
from services.supervision.projection import SupervisionProjection, SupervisionReader
from simulators.harness import EPOCH_NS, HOUR_NS, MINUTE_NS, NS_PER_S

__all__ = ["EPOCH_NS", "HOUR_NS", "MINUTE_NS", "NS_PER_S", "Market", "supervise"]

STAFF_IP = "10.0.0.1"
STAFF_DEVICE = "staff-device"


class Market:
    def __init__(self, ledger_dir: Path, *, batch_entries: int = 64) -> None:
        self.store = LedgerStore.open(ledger_dir)
        self.journal = Journal(
            self.store,
            Router(),
            snapshot_every_entries=100_000,
            batch_max_entries=batch_entries,
        )
        self.router = self.journal.router
        self.now_ns = EPOCH_NS
        self._client_seq: Counter[str] = Counter()
        self.seqs: list[int] = []

    # ------------------------------------------------------------ commands
    def next_seq(self, origin: str) -> int:
        self._client_seq[origin] += 1
        return self._client_seq[origin]

    def fire(self, until_ns: int) -> None:
        """Ledger a Tick at every engine deadline at or before ``until_ns``."""
        while (nd := self.router.next_deadline_ns()) is not None and nd <= until_ns:
            self._append(Tick("system", 0), nd, b"")

    def _append(self, cmd: Command, t_ns: int, meta: bytes) -> tuple[int, list[Event]]:
        self.now_ns = max(t_ns, self.now_ns + 1)
        out = self.journal.append(cmd, self.now_ns, meta)
        if self.journal.full():
            self.journal.commit()
        return out.seq, out.events

    def send(
        self, cmd: Command, t_ns: int, *, ip: str = "", device: str = ""
    ) -> tuple[int, list[Event]]:
        self.fire(t_ns)
        kind, _, ident = cmd.origin.partition(":")
        meta = encode_envelope(Envelope(kind, ident, ip, device)) if kind != "system" else b""
        return self._append(cmd, t_ns, meta)

    def staff(self, cls: type, *args: object, t_ns: int, ip: str = STAFF_IP, **kw: object) -> int:
        origin = "staff:clerk"
        cmd = cls(origin, self.next_seq(origin), *args, **kw)
        seq, _ = self.send(cmd, t_ns, ip=ip, device=STAFF_DEVICE)
        return seq

    def bidder(
        self, bidder_id: str, cls: type, *args: object, t_ns: int, ip: str = "", device: str = ""
    ) -> tuple[int, list[Event]]:
        origin = f"bidder:{bidder_id}"
        cmd = cls(origin, self.next_seq(origin), *args)
        return self.send(cmd, t_ns, ip=ip, device=device)

    # ------------------------------------------------------------ set-ups
    def lot(
        self,
        lot_id: str,
        *,
        mechanism: str = "english",
        start_price_fen: int = 100_000,
        increment_fen: int = 1_000,
        start_ns: int | None = None,
        end_ns: int | None = None,
        rules: RuleSet | None = None,
        bidders: tuple[str, ...] = (),
        t_ns: int | None = None,
    ) -> None:
        """Create and publish a lot, register and confirm ``bidders``."""
        t = self.now_ns + 1 if t_ns is None else t_ns
        start = t + MINUTE_NS if start_ns is None else start_ns
        end = start + 4 * HOUR_NS if end_ns is None else end_ns
        self.staff(
            CreateLot,
            lot_id,
            mechanism,
            f"lot {lot_id}",
            start_price_fen,
            increment_fen,
            start,
            end,
            rules or RuleSet(),
            t_ns=t,
        )
        self.staff(PublishLot, lot_id, t_ns=t)
        for b in bidders:
            self.staff(RegisterBidder, lot_id, b, t_ns=t)
            self.staff(ConfirmDeposit, lot_id, b, 0, t_ns=t)

    def key(self, key_id: str, bidder_id: str, public_key_hex: str, t_ns: int) -> int:
        return self.staff(RegisterKey, key_id, bidder_id, public_key_hex, t_ns=t_ns)

    def close(self) -> None:
        self.journal.commit()
        self.store.close()


def supervise(
    market: Market, store_dir: Path, config: SupervisionConfig | None = None
) -> list[Alert]:
    """Commit what the market holds, follow it into a fresh supervision store
    and return every alert, in raising order."""
    market.journal.commit()
    ss = ServiceStore.open(store_dir)
    try:
        follower = Follower("test", market.store, ss, [SupervisionProjection(config)])
        follower.catch_up()
        return SupervisionReader(ss).alerts(0, 100_000)
    finally:
        ss.close()
