"""The running terminal: the runner (trio: connection with backoff, pinger) that
feeds the model, and a thin curses UI over it."""

from __future__ import annotations

import contextlib
import random
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import trio
from nacl.signing import SigningKey

from gateway.clients.terminal.keys import (
    ReceiptLog,
    SeqStore,
    default_paths,
    load_key,
)
from gateway.clients.terminal.model import (
    HELP_LINES,
    LotRow,
    TerminalModel,
    fmt_clock,
    fmt_yuan,
)
from gateway.wire import protocol as p
from gateway.wire import ws

# --------------------------------------------------------------- the runner


class Backoff:
    """Exponential with jitter, so many terminals do not reconnect in step."""

    def __init__(self, first: float = 0.5, cap: float = 8.0) -> None:
        self.first, self.cap, self.attempt = first, cap, 0

    def next(self) -> float:
        delay = min(self.cap, self.first * 2**self.attempt)
        self.attempt += 1
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.attempt = 0


def auth_url(url: str, key: SigningKey, key_id: str) -> str:
    params = p.auth_params(key, key_id, int(time.time() * 1000), secrets.token_hex(12))
    return f"{url}?{urlencode(params)}"


class Runner:
    """Owns the connection: reconnects with backoff and feeds the model."""

    PING_S = 5.0
    SILENCE_S = 20.0  # no frame at all this long: the server is gone, reconnect

    def __init__(self, model: TerminalModel, url: str) -> None:
        self.model, self.url = model, url
        self.sock: Any = None
        self.lock = trio.Lock()
        self.last_heard = time.monotonic()

    async def flush(self) -> None:
        """Send the queued frames if connected; on failure they wait for the reconnect."""
        if self.sock is None:
            return
        async with self.lock:
            for text in self.model.take_unsent():
                try:
                    await self.sock.send(text)
                except ws.ConnectionClosed:
                    return

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self._session(backoff)
                reason = "closed by the server"
            except Exception as e:  # every failure of a session means: reconnect later
                reason = _reason(e)
            self.sock = None
            delay = backoff.next()
            self.model.on_disconnected(reason, delay)
            await trio.sleep(delay)

    async def _session(self, backoff: Backoff) -> None:
        m = self.model
        async with trio.open_nursery() as nursery:
            sock = await ws.connect(nursery, auth_url(self.url, m.key, m.key_id))
            hello = p.decode_server(await sock.receive())
            if not isinstance(hello, p.Hello):
                raise ConnectionError(f"expected hello, got {type(hello).__name__}")
            self.sock, self.last_heard = sock, time.monotonic()
            backoff.reset()
            m.on_connected(hello, self.url)
            await sock.send(p.encode_text(p.Subscribe(m.subscriptions())))
            await self.flush()
            nursery.start_soon(self._pinger, sock)
            try:
                while True:
                    m.on_frame(p.decode_server(await sock.receive()))
                    self.last_heard = time.monotonic()
            except ws.ConnectionClosed:
                pass
            nursery.cancel_scope.cancel()

    async def _pinger(self, sock: Any) -> None:
        while True:
            await trio.sleep(self.PING_S)
            if time.monotonic() - self.last_heard > self.SILENCE_S:
                await sock.close(1001, "no frames from the server")
                return
            async with self.lock:
                await sock.send(p.encode_text(p.Ping(time.time_ns())))
            await self.flush()  # bids whose outcome was unknown go again, same client_seq


def _reason(e: BaseException) -> str:
    if isinstance(e, BaseExceptionGroup) and e.exceptions:
        return _reason(e.exceptions[0])
    return f"{type(e).__name__}: {e}"[:120]


# ------------------------------------------------------------------ the UI


class Screen:
    """Thin curses view and key handling over the model."""

    def __init__(self, scr: Any, model: TerminalModel) -> None:
        import curses

        self.curses, self.scr, self.model = curses, scr, model
        scr.nodelay(True)
        scr.keypad(True)
        with contextlib.suppress(curses.error):
            curses.curs_set(0)

    def keys(self) -> bool:
        """Handle every key waiting; True when something may need sending."""
        acted = False
        while True:
            try:
                ch = self.scr.get_wch()
            except self.curses.error:
                return acted
            acted = self._key(ch) or acted

    def _key(self, ch: str | int) -> bool:
        c, m = self.curses, self.model
        if ch == c.KEY_UP:
            m.move(-1)
        elif ch == c.KEY_DOWN:
            m.move(1)
        elif ch in ("\n", "\r", c.KEY_ENTER):
            line, m.input = m.input, ""
            m.command(line)
            return True
        elif ch == "+" and not m.input:
            m.bid_increment()
            return True
        elif ch in (c.KEY_BACKSPACE, "\x7f", "\b"):
            m.input = m.input[:-1]
        elif ch == "\x1b":
            m.input = ""
        elif isinstance(ch, str) and ch.isprintable():
            m.input += ch
        return False

    def put(self, y: int, x: int, text: str, attr: int = 0) -> None:
        h, w = self.scr.getmaxyx()
        if 0 <= y < h and x < w:
            with contextlib.suppress(self.curses.error):  # the last cell raises; harmless
                self.scr.addnstr(y, x, text, max(0, w - x - 1), attr)

    def draw(self) -> None:
        m, c = self.model, self.curses
        self.scr.erase()
        h, w = self.scr.getmaxyx()
        wide = w >= WIDE_COLUMNS  # narrow screens drop the increment and bid count
        now = fmt_clock(m.server_now())
        self.put(0, 0, f"pubex terminal · key {m.key_id} · server time {now} CST", c.A_BOLD)
        self.put(1, 0, m.status)
        self.put(3, 0, _header(wide), c.A_BOLD)
        y = 4
        for i, lot in enumerate(m.order()):
            attr = c.A_REVERSE if i == m.selected else 0
            self.put(y, 0, self._row(i, m.rows[lot], wide), attr)
            y += 1
        pending = ", ".join(f"{b.lot} {fmt_yuan(b.amount_fen)}" for b in m.pending.values())
        self.put(y + 1, 0, f"pending: {pending or 'none'}")
        for k, text in enumerate(HELP_LINES):
            self.put(y + 2 + k, 0, ("keys " if k == 0 else "     ") + text)
        self.put(y + 4, 0, f"> {m.input}", c.A_BOLD)
        room = max(0, h - (y + 6))
        for k, text in enumerate(list(m.messages)[-room:] if room else []):
            self.put(y + 6 + k, 0, text)
        self.scr.refresh()

    def _row(self, i: int, r: LotRow, wide: bool) -> str:
        m = self.model
        mark = ">" if i == m.selected else " "
        if not r.known:
            return f"{mark}{i + 1:>2}  {r.lot:<12} (waiting for data)"
        price = fmt_yuan(r.price_fen) if r.leader_code else "no bids yet"
        nxt, standing = fmt_yuan(r.next_bid_fen()), m.standing(r.lot)
        if not wide:
            return (
                f"{mark}{i + 1:>2} {r.lot:<8} {r.status:<9} {price:>15} {nxt:>15} "
                f"{m.countdown(r).removeprefix('ends in '):<10} {standing}"
            )
        code = m.codes.get(r.lot, "")
        return (
            f"{mark}{i + 1:>2}  {r.lot:<12} {r.status + '/' + r.phase:<16} {price:>20} "
            f"{fmt_yuan(r.increment_fen):>16} {nxt:>20}  "
            f"{m.countdown(r):<20} {r.bid_count:>5}  {standing}"
            + (f" (my code {code})" if code else "")
        )


WIDE_COLUMNS = 150


def _header(wide: bool) -> str:
    if not wide:
        return (
            f"  # {'lot':<8} {'status':<9} {'price':>15} {'next bid':>15} {'ends in':<10} standing"
        )
    return (
        f"  #  {'lot':<12} {'status/phase':<16} {'price':>20} {'increment':>16} "
        f"{'next bid':>20}  {'countdown':<20} {'bids':>5}  standing"
    )


async def _ui(screen: Screen, runner: Runner) -> None:
    while not screen.model.quit:
        if screen.keys():
            await runner.flush()
        screen.draw()
        await trio.sleep(0.05)


async def _main(scr: Any, model: TerminalModel, url: str) -> None:
    runner = Runner(model, url)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.run)
        await _ui(Screen(scr, model), runner)
        nursery.cancel_scope.cancel()


def run_terminal(key_path: Path, url: str, lots: list[str], receipts: Path | None) -> int:
    import curses
    import locale

    key, key_id = load_key(key_path)
    state_path, default_receipts = default_paths(key_path)
    model = TerminalModel(
        key, key_id, lots, SeqStore(state_path), ReceiptLog(receipts or default_receipts)
    )
    locale.setlocale(locale.LC_ALL, "")  # curses needs it to draw 元 and 领先
    with contextlib.suppress(KeyboardInterrupt):
        curses.wrapper(lambda scr: trio.run(_main, scr, model, url))
    return 0
