"""The live console in a real browser (Debian's chromium driven by Playwright).

A ``pubex serve`` subprocess (no demo) gets 50 English lots, bidders, keys and
deposits through a staff WebSocket; bidders then bid over their own signed
connections while the page is watched: a new bid shows, every row of the
50-lot page updates, a late bid extends the countdown, a staff freeze from the
page shows the lot frozen.  A ``pubex supervise`` beside it feeds the alert
area (the bidders share one IP: W-D1), and a click acknowledges an alert with
a ledgered ``handle_alert``; the replay page plays a lot's bids back.  The
wall-screen view is saved as console.png in a temporary folder, or in
$PUBEX_SCREENSHOT_DIR when set (``make screenshots`` sets it to docs/, the
images the README shows): a test run writes no tracked file.

Never ``playwright install``: the browser is /usr/bin/chromium (``make test``
installs it through SYSDEPS).  Without it the test skips, unless
PUBEX_REQUIRE_BROWSER is set (then it fails).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from nacl.signing import SigningKey

from engine.rules import RuleSet
from gateway.wire import protocol as p

websocket = pytest.importorskip("websocket", reason="websocket-client is not installed")

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = (
    Path(os.environ.get("PUBEX_SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="pubex-shots-"))
    / "console.png"
)
STAFF_TOKEN = "dev-staff-token"
NS = 1_000_000_000
N_LOTS = 50
BIDDERS = 4
SNIPE_LOT = "L007"  # ends soon after it opens, inside its own anti-sniping window
FREEZE_LOT = "L012"
FIRST_LOT = "L001"
TIMEOUT = 15_000  # ms, for every expectation on the page

if not CHROMIUM.exists() and not os.environ.get("PUBEX_REQUIRE_BROWSER"):
    pytest.skip(
        f"{CHROMIUM} not found (apt-get install chromium, or `make test`); "
        "set PUBEX_REQUIRE_BROWSER=1 to make this a failure",
        allow_module_level=True,
    )

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = sync_api.expect

TITLES = [
    ("国有建设用地使用权", "Land-use right", 180_000_000_00),  # 1.8 亿元: shown in 万元
    ("采矿权", "Mining right", 23_500_000_00),
    ("国有企业股权", "State-owned equity", 6_800_000_00),
    ("罚没车辆", "Confiscated vehicle", 186_000_00),
    ("办公用房租赁权", "Office lease", 1_250_000_00),
]


# ------------------------------------------------------------------ server


@dataclass
class Server:
    ws_url: str
    http_url: str
    proc: subprocess.Popen[str]


SUPERVISE = [sys.executable, "-m", "gateway.entry.cli", "supervise"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("console-data")
    sv_port = free_port()
    config = data.parent / "console.toml"
    config.write_text(f"[services]\nsupervision_http_port = {sv_port}\n")
    cmd = [sys.executable, "-m", "gateway.entry.cli", "serve", "--data", str(data)]
    cmd += ["--ws-port", "0", "--http-port", "0", "--config", str(config), "--sandbox"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    supervise: subprocess.Popen[bytes] | None = None
    try:
        found: list[str] = []
        output: list[str] = []

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                output.append(line)
                if not found and line.startswith("listening"):
                    found.append(line)

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 30
        while not found and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if not found:
            raise AssertionError("pubex serve did not start:\n" + "".join(output))
        m = re.search(r"ws=(\S+) http=(\S+)", found[0])
        assert m, found[0]
        # The supervision service on the same data: the console's page (its Origin)
        # opens its alert feed with the login cookie (cookies are per host, not port).
        supervise = subprocess.Popen(
            [
                *SUPERVISE,
                "--data",
                str(data),
                "--http-port",
                str(sv_port),
                "--demo",
                "--console-origin",
                m.group(2),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        yield Server(m.group(1), m.group(2).rstrip("/"), proc)
    finally:
        if supervise is not None and supervise.poll() is None:
            supervise.send_signal(signal.SIGTERM)
            try:
                supervise.wait(15)
            except subprocess.TimeoutExpired:
                supervise.kill()
                supervise.wait(5)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


# ------------------------------------------------------------- ws clients


class Conn:
    """A blocking WebSocket client: send frames, wait for the reply to a client_seq."""

    def __init__(self, url: str, header: list[str] | None = None) -> None:
        # Terminals send no Origin (a browser's would have to be the console's own).
        self.ws = websocket.create_connection(
            url, timeout=20, suppress_origin=True, header=header or []
        )
        self.hello = json.loads(self.ws.recv())
        assert self.hello["type"] == "hello", self.hello
        self.replies: dict[int, dict] = {}

    def wait(self, seqs: set[int]) -> dict[int, dict]:
        while not seqs <= self.replies.keys():
            frame = json.loads(self.ws.recv())
            if frame["type"] in ("ack", "error") and frame["client_seq"]:
                self.replies[frame["client_seq"]] = frame
            elif frame["type"] == "error":
                raise AssertionError(f"refused: {frame}")
        return {s: self.replies.pop(s) for s in seqs}

    def close(self) -> None:
        self.ws.close()


class Staff(Conn):
    def __init__(self, ws_url: str) -> None:
        super().__init__(ws_url, [f"Authorization: Bearer {STAFF_TOKEN}"])
        assert self.hello["role"] == "staff"
        self.seq = 0

    def run(self, frames: list[p.Frame]) -> None:
        """Pipeline the frames, then insist every one was acknowledged."""
        seqs = set()
        for frame in frames:
            self.ws.send(p.encode_text(frame))
            seqs.add(frame.client_seq)  # type: ignore[attr-defined]
        for reply in self.wait(seqs).values():
            assert reply["type"] == "ack", reply

    def next(self) -> int:
        self.seq += 1
        return self.seq


class Bidder(Conn):
    def __init__(self, ws_url: str, key: SigningKey, key_id: str) -> None:
        auth = p.auth_params(key, key_id, int(time.time() * 1000), secrets.token_hex(12))
        super().__init__(f"{ws_url}?{urlencode(auth)}")
        assert self.hello["role"] == "bidder", self.hello
        self.key, self.key_id, self.seq = key, key_id, 0

    def bid(self, lot: str, amount_fen: int) -> None:
        for _ in range(50):
            self.seq += 1
            self.ws.send(p.bid_frame(self.key, self.key_id, lot, amount_fen, self.seq))
            reply = self.wait({self.seq})[self.seq]
            if reply["type"] == "ack":
                return
            assert reply["name"] == "rate_limited", reply
            time.sleep(0.1)
        raise AssertionError(f"bid on {lot} kept being rate limited")

    def order(self, item: str, side: str, price: int, qty: int, kind: str = "limit") -> None:
        self.seq += 1
        payload = p.OrderPayload(
            p.ORDER_DOMAIN,
            "place",
            item,
            self.key_id,
            self.seq,
            side,
            kind,
            price,
            qty,  # type: ignore[arg-type]
        )
        self.ws.send(p.order_frame(self.key, payload))
        reply = self.wait({self.seq})[self.seq]
        assert reply["type"] == "ack", reply


@dataclass
class Market:
    start_fen: dict[str, int]
    inc_fen: dict[str, int]
    price_fen: dict[str, int]
    bidders: list[Bidder]
    count: dict[str, int]

    def bid(self, lot: str, n: int = 0) -> int:
        """The next valid bid on ``lot`` by bidder ``n``; returns the amount."""
        price = self.price_fen.get(lot)
        amount = self.start_fen[lot] if price is None else price + self.inc_fen[lot]
        self.bidders[n % len(self.bidders)].bid(lot, amount)
        self.price_fen[lot] = amount
        self.count[lot] = self.count.get(lot, 0) + 1
        return amount


@pytest.fixture(scope="module")
def market(server: Server) -> Iterator[Market]:
    staff = Staff(server.ws_url)
    keys = [SigningKey.generate() for _ in range(BIDDERS)]
    frames: list[p.Frame] = [
        p.RegisterKeyFrame(staff.next(), f"key-{n}", f"bidder-{n}", k.verify_key.encode().hex())
        for n, k in enumerate(keys)
    ]
    now = time.time_ns()
    rules = RuleSet(extension_window_ns=60 * NS)
    start_fen: dict[str, int] = {}
    inc_fen: dict[str, int] = {}
    for i in range(1, N_LOTS + 1):
        lot = f"L{i:03d}"
        zh, en, base = TITLES[i % len(TITLES)]
        start = base + (i * 37 % 11) * base // 20
        start -= start % 100_00  # whole hundreds of yuan
        inc = max(100_00, start // 100 // 100_00 * 100_00)
        start_fen[lot], inc_fen[lot] = start, inc
        # Ends a few minutes away, except the sniping lot: 55 s from now, so from its opening
        # (in 2 s) it is inside its 60 s anti-sniping window and any bid on it extends the end.
        end = now + (55 if lot == SNIPE_LOT else 300 + 7 * i) * NS
        frames.append(
            p.CreateLotFrame(
                staff.next(),
                lot,
                "english",
                f"{zh} {en} #{i}",
                start,
                inc,
                now + 2 * NS,
                end,
                rules=rules,
            )
        )
        frames.append(p.PublishLotFrame(staff.next(), lot))
        for n in range(BIDDERS):
            frames.append(p.RegisterBidderFrame(staff.next(), lot, f"bidder-{n}"))
            frames.append(p.ConfirmDepositFrame(staff.next(), lot, f"bidder-{n}", 0))
    staff.run(frames)
    staff.close()
    bidders = [Bidder(server.ws_url, k, f"key-{n}") for n, k in enumerate(keys)]
    try:
        yield Market(start_fen, inc_fen, {}, bidders, {})
    finally:
        for b in bidders:
            b.close()


# ---------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def page(server: Server) -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            context = browser.new_context(
                viewport={"width": 1920, "height": 1080}, device_scale_factor=1
            )
            pg = context.new_page()
            errors: list[str] = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            pg.goto(f"{server.http_url}/")
            pg.get_by_test_id("login-token").fill(STAFF_TOKEN)  # POST /login sets the cookie
            pg.get_by_test_id("login-submit").click()
            pg.get_by_test_id("logout").wait_for(state="visible")
            yield pg
            assert not errors, f"errors in the page: {errors}"
        finally:
            browser.close()


def price_text(fen: int, wan: bool) -> str:
    return f"{fen / 1e6:,.2f}" if wan else f"{fen // 100:,}"


def row(page: Any, lot: str) -> Any:
    return page.get_by_test_id(f"lot-row-{lot}")


def test_console_live(server: Server, market: Market, page: Any) -> None:
    pg = page
    tid = pg.get_by_test_id

    # Staff session over the cookie; all 50 lots listed and open.
    expect(tid("role")).to_contain_text("Staff", timeout=TIMEOUT)
    expect(tid("conn")).to_contain_text("Live", timeout=TIMEOUT)
    expect(pg.locator("[data-testid^='lot-row-']")).to_have_count(N_LOTS, timeout=TIMEOUT)
    expect(pg.locator(".row[data-status='open']")).to_have_count(N_LOTS, timeout=TIMEOUT)

    # A new bid shows in its row (amount with separators, 万元 for land-sized lots).
    amount = market.bid(FIRST_LOT, 0)
    price = tid(f"price-{FIRST_LOT}")
    expect(price).to_have_attribute("data-price-fen", str(amount), timeout=TIMEOUT)
    wan = market.start_fen[FIRST_LOT] >= 10_000_000_00
    expect(price).to_contain_text(price_text(amount, wan), timeout=TIMEOUT)
    expect(price).to_contain_text("万元" if wan else "元")
    expect(tid(f"bids-{FIRST_LOT}")).to_have_text("1", timeout=TIMEOUT)

    # A late bid (inside the anti-sniping window) moves the end time later.
    ends = tid(f"ends-{SNIPE_LOT}")
    expect(ends).to_have_attribute("data-end-ns", re.compile(r"^\d+$"), timeout=TIMEOUT)
    before = int(ends.get_attribute("data-end-ns"))
    market.bid(SNIPE_LOT, 1)
    pg.wait_for_function(
        "([id, before]) => BigInt(document.querySelector(`[data-testid=ends-${id}]`)"
        ".dataset.endNs) > BigInt(before)",
        arg=[SNIPE_LOT, str(before)],
        timeout=TIMEOUT,
    )
    expect(tid(f"ext-{SNIPE_LOT}")).to_have_text("+1", timeout=TIMEOUT)

    # Bids on every lot: every row of the 50-lot page updates.
    for i in range(1, N_LOTS + 1):
        lot = f"L{i:03d}"
        for k in range(1 + i % 3):
            market.bid(lot, i + k)
    for lot, fen in market.price_fen.items():
        expect(tid(f"price-{lot}")).to_have_attribute("data-price-fen", str(fen), timeout=TIMEOUT)

    # The supervision feed: bidders sharing one IP on a lot (W-D1) show in the alert
    # area; staff acknowledge one, and the ledgered decision comes back on the feed.
    d1 = pg.locator("#alerts li[data-rule='W-D1']").first
    expect(d1).to_be_visible(timeout=TIMEOUT)
    alert_id = d1.get_attribute("data-testid")
    tid(f"{alert_id}-acknowledge").click()
    expect(tid(alert_id)).to_have_attribute("data-handled", "acknowledge", timeout=TIMEOUT)
    expect(tid(alert_id)).to_contain_text("staff:staff-01", timeout=TIMEOUT)

    # A little history on the first lot for its chart.
    for k in range(6):
        market.bid(FIRST_LOT, k)
        time.sleep(0.25)  # a time gap: the chart's points at distinct times (nothing timed)

    # Staff freeze from the page (the reason prompt answered): the row shows frozen.
    pg.on("dialog", lambda d: d.accept("现场核查 on-site check"))
    row(pg, FREEZE_LOT).click()
    expect(tid("detail-lot")).to_have_text(FREEZE_LOT, timeout=TIMEOUT)
    tid("btn-freeze").click()
    expect(row(pg, FREEZE_LOT)).to_have_attribute("data-status", "frozen", timeout=TIMEOUT)
    expect(tid(f"status-{FREEZE_LOT}")).to_contain_text("Frozen", timeout=TIMEOUT)
    expect(tid("oplog")).to_contain_text("✓", timeout=TIMEOUT)

    # The wall-screen view: the busiest lot selected, chart and bid list filled.
    row(pg, FIRST_LOT).click()
    expect(tid("detail-lot")).to_have_text(FIRST_LOT, timeout=TIMEOUT)
    n_bids = market.count[FIRST_LOT]
    expect(tid(f"bids-{FIRST_LOT}")).to_have_text(str(n_bids), timeout=TIMEOUT)
    expect(tid("bid-list").locator("tr")).to_have_count(n_bids, timeout=TIMEOUT)
    expect(pg.locator("#chart canvas")).to_have_count(1, timeout=TIMEOUT)
    pg.wait_for_timeout(1200)  # let the bid flashes fade
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SCREENSHOT))

    # The replay page plays the first lot's bids back at 100x.
    replay = pg.context.new_page()
    replay.goto(f"{server.http_url}/static/replay.html?lot={FIRST_LOT}")
    rid = replay.get_by_test_id
    expect(rid("replay-total")).to_have_text(str(n_bids), timeout=TIMEOUT)
    expect(rid("replay-count")).to_have_text("0")
    rid("replay-speed").select_option("100")
    rid("replay-play").click()
    expect(replay.locator("body")).to_have_attribute("data-state", "done", timeout=TIMEOUT)
    expect(rid("replay-count")).to_have_text(str(n_bids))
    expect(rid("replay-price")).to_have_attribute(
        "data-price-fen", str(market.price_fen[FIRST_LOT])
    )
    expect(rid("replay-bids").locator("tr")).to_have_count(n_bids)
    replay.close()

    # The e-mall view: an item in its opening call, orders from two traders, the open
    # uncross and a taker; the ladder, the tape and the price chart show them.
    staff = Staff(server.ws_url)
    staff.seq = time.time_ns() // 1000  # above the page's (Date.now()) on this staff origin
    staff.run(
        [
            p.CreateItemFrame(staff.next(), "E-PAPER", "A4 复印纸 80g", 2_500, 500, 0, "call"),
        ]
    )
    sellers, buyers = market.bidders[0], market.bidders[1]
    for who, side, price, qty in (
        (sellers, "sell", 2_450, 30),
        (sellers, "sell", 2_520, 40),
        (buyers, "buy", 2_480, 12),
        (buyers, "buy", 2_400, 25),
    ):
        who.order("E-PAPER", side, price, qty)
    staff.run([p.SetItemSessionFrame(staff.next(), "E-PAPER", "open")])
    buyers.order("E-PAPER", "buy", 2_460, 8, kind="ioc")
    staff.close()
    tid("tab-emall").click()
    expect(tid("emall")).to_be_visible(timeout=TIMEOUT)
    expect(tid("item-E-PAPER")).to_be_visible(timeout=TIMEOUT)
    expect(tid("book-volume")).to_have_text("20", timeout=TIMEOUT)
    expect(tid("level-ask-2450")).to_contain_text("10", timeout=TIMEOUT)
    expect(tid("level-bid-2400")).to_contain_text("25", timeout=TIMEOUT)
    expect(tid("tape").locator("tr")).to_have_count(2, timeout=TIMEOUT)
    expect(pg.locator("#e-chart canvas")).to_have_count(1, timeout=TIMEOUT)
    pg.screenshot(path=str(SCREENSHOT.with_name("console-emall.png")))
